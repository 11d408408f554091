import json

import pytest

from cashcow.storage import Store, StorageError, company_from_dict, company_to_dict


def test_save_then_load_returns_the_same_company(store, company):
    store.save(company)
    assert store.load("acme") == company


def test_saved_file_is_readable_json(store, company):
    path = store.save(company)
    data = json.loads(path.read_text())
    assert data["name"] == "acme"
    assert len(data["employees"]) == 3


def test_load_uses_the_cache(store, company):
    store.save(company)
    store.load("acme")
    store.load("acme")
    assert store.reads == 1


def test_save_invalidates_the_cache(store, company):
    store.save(company)
    store.load("acme")
    company.cash = 1.0
    store.save(company)
    assert store.load("acme").cash == 1.0
    assert store.reads == 2


def test_load_unknown_company(store):
    with pytest.raises(StorageError, match="no company named"):
        store.load("nope")


@pytest.mark.parametrize("name", ["", "../etc", ".hidden", "a/b"])
def test_invalid_names_are_refused(store, name):
    with pytest.raises(StorageError, match="invalid record name"):
        store.load(name)


def test_corrupt_file_is_reported(store):
    (store.root / "bad.json").write_text("{not json")
    with pytest.raises(StorageError, match="corrupt"):
        store.load("bad")


def test_record_missing_fields_is_reported():
    with pytest.raises(StorageError, match="not a company record"):
        company_from_dict({"cash": 1})


def test_delete(store, company):
    store.save(company)
    assert store.delete("acme") is True
    assert store.delete("acme") is False
    assert store.names() == []


def test_names_are_sorted(store, company):
    for n in ["b", "a", "c"]:
        company.name = n
        store.save(company)
    assert store.names() == ["a", "b", "c"]


def test_writes_leave_no_temporary_files(store, company):
    store.save(company)
    store.save(company)
    assert [p.name for p in store.root.iterdir()] == ["acme.json"]


def test_failed_write_keeps_the_old_record(store, company, monkeypatch):
    store.save(company)
    import os

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    company.cash = 0.0
    with pytest.raises(StorageError, match="disk full"):
        store.save(company)
    monkeypatch.undo()
    assert store.load("acme").cash == 500_000.0
    assert [p.name for p in store.root.iterdir()] == ["acme.json"]


def test_dict_round_trip(company):
    assert company_from_dict(company_to_dict(company)) == company
