//! A real OTLP/HTTP receiver on loopback: records the exports and decodes the
//! `ExportTraceServiceRequest` protobufs (the wire format the Collector receives).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use std::net::SocketAddr;

#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service_name: String,
    pub name: String,
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub status_code: i32,
    pub attributes: Vec<(String, String)>,
}

impl ReceivedSpan {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attributes.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    rec: super::recorder::Recorder,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn value(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let rec = super::recorder::Recorder::start().await;
        OtlpReceiver { addr: rec.addr, rec }
    }

    /// Every span received so far, decoded from the `/v1/traces` protobuf bodies.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let mut out = Vec::new();
        for r in self.rec.seen().into_iter().filter(|r| r.path == "/v1/traces") {
            let Ok(msg) = ExportTraceServiceRequest::decode(r.body.as_slice()) else { continue };
            for rs in msg.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                    .map(|a| value(&a.value))
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        out.push(ReceivedSpan {
                            service_name: service.clone(),
                            name: s.name.clone(),
                            kind: s.kind,
                            trace_id: hex(&s.trace_id),
                            span_id: hex(&s.span_id),
                            parent_span_id: hex(&s.parent_span_id),
                            status_code: s.status.as_ref().map(|st| st.code).unwrap_or(0),
                            attributes: s.attributes.iter().map(|a| (a.key.clone(), value(&a.value))).collect(),
                        });
                    }
                }
            }
        }
        out
    }
}
