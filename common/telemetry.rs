//! OpenTelemetry traces over OTLP/gRPC. The endpoint comes from the config's
//! `telemetry.otlp_endpoint` or OTEL_EXPORTER_OTLP_ENDPOINT; with neither,
//! nothing is exported and every span is a no-op. Export runs in the
//! background, so a dead collector neither slows nor breaks a run.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// Keeps the exporter alive; flushes (briefly) when shut down.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// `explicit` wins over OTEL_EXPORTER_OTLP_ENDPOINT.
pub fn endpoint(explicit: Option<&str>) -> Option<String> {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.trim().is_empty())
}

pub fn init(
    service: &'static str,
    attributes: Vec<KeyValue>,
    endpoint: Option<String>,
) -> anyhow::Result<Telemetry> {
    let Some(endpoint) = endpoint else {
        return Ok(Telemetry { provider: None });
    };
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(Duration::from_secs(3))
        .build()?;
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attributes(attributes)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing::info!(endpoint, service, "exporting traces over OTLP");
    Ok(Telemetry {
        provider: Some(provider),
    })
}

impl Telemetry {
    /// Sends what is left, giving up after two seconds.
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            let done = std::thread::spawn(move || {
                let _ = p.shutdown();
            });
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while !done.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

pub fn tracer() -> opentelemetry::global::BoxedTracer {
    opentelemetry::global::tracer("testfleet")
}

/// W3C trace context of `cx`, for the wire (empty for a no-op span).
pub fn inject(cx: &Context) -> HashMap<String, String> {
    let mut map = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut map);
    map
}

pub fn extract(map: &HashMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(map)
}
