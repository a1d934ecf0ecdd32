//! A real OTLP/HTTP receiver on loopback: decodes `ExportTraceServiceRequest` protobufs
//! (the wire format the Collector receives) and keeps the spans.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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
    pub spans: Arc<Mutex<Vec<ReceivedSpan>>>,
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Arc<Mutex<Vec<ReceivedSpan>>> = Arc::default();
        let store = spans.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { continue };
                let store = store.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            if path == "/v1/traces" {
                                if let Ok(msg) = ExportTraceServiceRequest::decode(body.as_ref()) {
                                    let mut out = store.lock().unwrap();
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
                            }
                            let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                            resp.headers_mut().insert("content-type", "application/x-protobuf".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(sock), svc).await;
                });
            }
        });
        OtlpReceiver { addr, spans }
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }
}
