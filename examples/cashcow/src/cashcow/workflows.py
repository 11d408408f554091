"""End-to-end workflows: load a company, project it, save the result.

The same work three ways: one after another, as asyncio tasks, and on a
thread pool. `io_latency` stands for the round trip to a remote store.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

from . import cashflow
from .storage import Store


@dataclass(frozen=True)
class WorkflowResult:
    company: str
    months: int
    ending_cash: float
    runway: int | None
    burn: float


def analyse(store: Store, name: str, start: date, months: int, io_latency: float = 0.0) -> WorkflowResult:
    if io_latency:
        time.sleep(io_latency)
    company = store.load(name)
    flows = cashflow.project(company, start, months)
    return WorkflowResult(
        company=name,
        months=months,
        ending_cash=flows[-1].cash if flows else company.cash,
        runway=cashflow.runway_months(company, start),
        burn=cashflow.burn_rate(flows),
    )


def run_sync(store: Store, names: list[str], start: date, months: int, io_latency: float = 0.0) -> list[WorkflowResult]:
    return [analyse(store, n, start, months, io_latency) for n in names]


async def analyse_async(store: Store, name: str, start: date, months: int, io_latency: float = 0.0) -> WorkflowResult:
    if io_latency:
        await asyncio.sleep(io_latency)
    return analyse(store, name, start, months)


async def run_async(store: Store, names: list[str], start: date, months: int, io_latency: float = 0.0) -> list[WorkflowResult]:
    return list(await asyncio.gather(*(analyse_async(store, n, start, months, io_latency) for n in names)))


def run_parallel(
    store: Store, names: list[str], start: date, months: int, io_latency: float = 0.0, workers: int = 4
) -> list[WorkflowResult]:
    if workers < 1:
        raise ValueError("at least one worker")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda n: analyse(store, n, start, months, io_latency), names))
