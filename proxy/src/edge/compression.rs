//! Compression that works with the cache. A text response is compressed once, on its way
//! from the origin into the cache, for the one coding the client's `Accept-Encoding` and the
//! route's preference agree on; the cache stores each coding as its own Vary variant (at most
//! four per URL whatever the spelling of `Accept-Encoding`), so a hit is never compressed
//! again. Each encoded variant gets its own strong validator (`"abc"` → `"abc-zstd"`).

use crate::config::{Coding, CompressionConfig};
use bytes::Bytes;
use parking_lot::Mutex;
use pingora_core::protocols::http::compression::{Algorithm, DictionaryData, Encode};
use pingora_http::{RequestHeader, ResponseHeader};
use std::io::{self, Write};
use std::sync::Arc;

/// Stored with a response Portier made compressible, so the Vary variance of
/// `Accept-Encoding` is the negotiated coding, not the header's spelling; never sent on.
pub(crate) const MARKER: &str = "x-portier-compressible";
/// [`MARKER`] parsed once: a `&str` name is parsed again on every lookup (~500 instructions).
pub(crate) const MARKER_NAME: http::HeaderName = http::HeaderName::from_static(MARKER);
const MARKER_FIELD: super::fields::Name = (http::HeaderName::from_static(MARKER), MARKER);

/// `Accept-Encoding`'s codings with their `q` (lower-cased; 1.0 when unsaid).
fn weights(req: &RequestHeader) -> Vec<(String, f32)> {
    let mut q_of: Vec<(String, f32)> = Vec::new();
    for v in req.headers.get_all(http::header::ACCEPT_ENCODING) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            q_of.push((name, q));
        }
    }
    q_of
}

fn q(q_of: &[(String, f32)], name: &str) -> f32 {
    q_of.iter().find(|(n, _)| n == name).or_else(|| q_of.iter().find(|(n, _)| n == "*")).map_or(0.0, |(_, q)| *q)
}

/// The coding for this request: the highest `q` among the route's codings, ties broken by
/// the route's order; `None` for identity.
pub(crate) fn negotiate(req: &RequestHeader, prefs: &[Coding]) -> Option<Coding> {
    let q_of = weights(req);
    let mut best: Option<(Coding, f32)> = None;
    for c in prefs {
        let cq = q(&q_of, c.as_str());
        if cq > 0.0 && best.is_none_or(|(_, bq)| cq > bq) {
            best = Some((*c, cq));
        }
    }
    best.map(|(c, _)| c)
}

/// Whether the client named `coding` itself with a `q` above 0 (a `*` does not count: the
/// dictionary codings are only sent to clients that list them).
pub(crate) fn accepts(req: &RequestHeader, coding: &str) -> bool {
    weights(req).iter().any(|(n, q)| n == coding && *q > 0.0)
}

/// Media types worth compressing: text, and the structured and script formats served as
/// `application/*` (fonts that are not already compressed too). WOFF, images, video and
/// archives are compressed already.
fn compressible_type(content_type: &str) -> bool {
    let t = content_type.split(';').next().unwrap_or("").trim();
    // Lower-cased on the stack: asked of every textual response.
    let mut buf = [0u8; 96];
    let Some(room) = buf.get_mut(..t.len()) else { return compressible_type_lowercase(&t.to_ascii_lowercase()) };
    room.copy_from_slice(t.as_bytes());
    room.make_ascii_lowercase();
    std::str::from_utf8(room).is_ok_and(compressible_type_lowercase)
}

fn compressible_type_lowercase(t: &str) -> bool {
    // Server-sent events are read as they come; an encoder holds bytes back until it has
    // enough to compress, and the events would arrive together at the end.
    if t == "text/event-stream" {
        return false;
    }
    t.starts_with("text/")
        || t.ends_with("+json")
        || t.ends_with("+xml")
        || matches!(
            t,
            "application/json"
                | "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "application/xml"
                | "application/wasm"
                | "application/manifest+json"
                | "image/svg+xml"
                | "image/x-icon"
                | "font/ttf"
                | "font/otf"
                | "application/vnd.ms-fontobject"
        )
}

/// Whether Portier may compress this response: a complete, not yet encoded, textual 200
/// that does not forbid transformation and is not known to be small.
pub(crate) fn eligible(resp: &ResponseHeader, cfg: &CompressionConfig) -> bool {
    let h = &resp.headers;
    let no_transform = super::fields::has_token(h, http::header::CACHE_CONTROL, "no-transform");
    let small = crate::edge::target::content_length(h).is_some_and(|n| n < cfg.min_size.0);
    resp.status.as_u16() == 200
        && !h.contains_key(http::header::CONTENT_ENCODING)
        && !h.contains_key(http::header::CONTENT_RANGE)
        && h.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(compressible_type)
        && !no_transform
        && !small
}

/// `"abc"` → `"abc-zstd"` (or `"abc-dcz-<dictionary id>"`); weak validators stay as they are
/// (the variants are equivalent).
fn suffixed_etag(etag: &str, suffix: &str) -> Option<String> {
    let inner = etag.strip_prefix('"')?.strip_suffix('"')?;
    Some(format!("\"{inner}-{suffix}\""))
}

/// The strong ETag of `etag` without a coding suffix Portier added, for revalidating with
/// the origin (which only knows its own validator).
pub(crate) fn origin_etag(etag: &str) -> Option<String> {
    let inner = etag.strip_prefix('"')?.strip_suffix('"')?;
    let inner = inner.strip_suffix("-max").unwrap_or(inner);
    let dcz =
        inner.rsplit_once("-dcz-").filter(|(_, id)| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())).map(|(base, _)| base);
    dcz.or_else(|| [Coding::Zstd, Coding::Br, Coding::Gzip].iter().find_map(|c| inner.strip_suffix(&format!("-{}", c.as_str()))))
        .map(|base| format!("\"{base}\""))
}

/// Marks an eligible response as varying on the coding and, when `coding` is one, turns its
/// header into the encoded variant's. The body is then fed to the returned [`Encoder`].
/// A `dictionary` (RFC 9842, see [`super::dictionary`]) takes the place of `coding`: the body
/// is then a `dcz` delta against it.
pub(crate) fn prepare(
    resp: &mut ResponseHeader,
    coding: Option<Coding>,
    dictionary: Option<&DictionaryData>,
    level: u32,
) -> Option<Encoder> {
    // Pingora's dcz encoder cannot flush chunk by chunk: a body without a length (streamed,
    // perhaps real-time) gets the ordinary coding instead, which the client accepts too.
    let streamed = !resp.headers.contains_key(http::header::CONTENT_LENGTH);
    let dictionary = dictionary.filter(|_| !streamed);
    let varies = |name| super::fields::has_token(&resp.headers, http::header::VARY, name);
    // One field line for what Portier adds.
    let added = match (varies("accept-encoding"), dictionary.is_some() && !varies("available-dictionary")) {
        (false, true) => Some("Accept-Encoding, Available-Dictionary"),
        (false, false) => Some("Accept-Encoding"),
        (true, true) => Some("Available-Dictionary"),
        (true, false) => None,
    };
    if let Some(v) = added {
        let _ = resp.append_header(http::header::VARY, http::HeaderValue::from_static(v));
    }
    let _ = resp.insert_header(MARKER_FIELD, http::HeaderValue::from_static("1"));
    // The first 8 bytes of the hash tell the `dcz` variants' validators apart.
    let delta = dictionary.and_then(|d| {
        let id: String = d.hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        Some((Encoder::with_dictionary(d, level)?, format!("dcz-{id}")))
    });
    let (mut encoder, suffix) = match delta {
        Some(d) => d,
        None => {
            let coding = coding?;
            (Encoder::new(coding, level).ok()?, coding.as_str().to_string())
        }
    };
    // Without a length the body is streamed (chunked or close-delimited) and may be real-time:
    // each chunk is flushed through the encoder, so it leaves as it came.
    encoder.flush_each = streamed;
    let _ = resp.insert_header(http::header::CONTENT_ENCODING, encoder.label);
    resp.remove_header(&http::header::CONTENT_LENGTH);
    if let Some(tag) = resp.headers.get(http::header::ETAG).and_then(|v| v.to_str().ok()).and_then(|e| suffixed_etag(e, &suffix)) {
        let _ = resp.insert_header(http::header::ETAG, tag);
    }
    Some(encoder)
}

/// The strongest level of each coding that browsers decode (zstd past 19 needs a window
/// larger than RFC 9659 allows).
pub(crate) fn strongest(c: Coding) -> u32 {
    match c {
        Coding::Gzip => 9,
        Coding::Br => 11,
        Coding::Zstd => 19,
    }
}

/// A whole body compressed at `level` in one go (the background re-compression).
pub(crate) fn compress_all(coding: Coding, level: u32, body: &Bytes) -> Option<Bytes> {
    let mut e = Encoder::new(coding, level).ok()?;
    let mut b = Some(body.clone());
    e.encode(&mut b, true).ok()?;
    b
}

/// The validator of a variant re-compressed at the strongest level: other bytes than the
/// first copy's, so another strong ETag (`"abc-br"` → `"abc-br-max"`); weak ones stay.
pub(crate) fn strongest_etag(fast: &http::HeaderValue) -> Option<http::HeaderValue> {
    let inner = fast.to_str().ok()?.strip_prefix('"')?.strip_suffix('"')?;
    http::HeaderValue::from_str(&format!("\"{inner}-max\"")).ok()
}

/// Where an encoder writes; drained after every chunk.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Writer {
    Gzip(flate2::write::GzEncoder<Sink>),
    Br(Box<brotli::CompressorWriter<Sink>>),
    Zstd(zstd::stream::write::Encoder<'static, Sink>),
    /// Pingora's `dcz` encoder (RFC 9842 header, then zstd with the dictionary as its prefix).
    Dcz(Box<dyn Encode + Send + Sync>),
}

/// A body being compressed. Own encoders rather than Pingora's for gzip, br and zstd: its
/// brotli encoder flushes but never ends the stream, which strict decoders refuse. Its `dcz`
/// encoder is used as it is (it writes the RFC 9842 header and ends the zstd frame).
pub(crate) struct Encoder {
    // A Mutex only because the zstd encoder is not Sync; one request uses it at a time.
    writer: Mutex<Option<Writer>>,
    sink: Sink,
    /// The `Content-Encoding` written, and the metrics' `encoding` label.
    pub(crate) label: &'static str,
    bytes_in: usize,
    bytes_out: usize,
    /// Flush after every chunk (a body without a declared length).
    flush_each: bool,
}

impl Encoder {
    fn new(coding: Coding, level: u32) -> io::Result<Encoder> {
        let sink = Sink::default();
        let writer = match coding {
            Coding::Gzip => Writer::Gzip(flate2::write::GzEncoder::new(sink.clone(), flate2::Compression::new(level.min(9)))),
            // 4 KiB buffer, 22-bit window (4 MiB): the brotli defaults browsers expect.
            Coding::Br => Writer::Br(Box::new(brotli::CompressorWriter::new(sink.clone(), 4096, level.min(11), 22))),
            // At most 19: above it zstd's window passes 8 MB, which RFC 9659 (and RFC 9842 for
            // dcz) forbid for HTTP and browsers refuse.
            Coding::Zstd => Writer::Zstd(zstd::stream::write::Encoder::new(sink.clone(), level.min(19) as i32)?),
        };
        Ok(Encoder { writer: Mutex::new(Some(writer)), sink, label: coding.as_str(), bytes_in: 0, bytes_out: 0, flush_each: false })
    }

    fn with_dictionary(d: &DictionaryData, level: u32) -> Option<Encoder> {
        let enc = Algorithm::Dcz.maybe_compressor_with_dictionary(level.min(19), d)?;
        Some(Encoder {
            writer: Mutex::new(Some(Writer::Dcz(enc))),
            sink: Sink::default(),
            label: "dcz",
            bytes_in: 0,
            bytes_out: 0,
            flush_each: false,
        })
    }

    /// Compresses one chunk (`None` when the origin sent none); ends the stream at the end.
    pub(crate) fn encode(&mut self, body: &mut Option<Bytes>, end: bool) -> pingora_error::Result<()> {
        use pingora_error::OrErr;
        let input = body.take().unwrap_or_default();
        self.bytes_in += input.len();
        let mut slot = self.writer.lock();
        let result = match slot.as_mut() {
            Some(Writer::Gzip(w)) => w.write_all(&input),
            Some(Writer::Br(w)) => w.write_all(&input),
            Some(Writer::Zstd(w)) => w.write_all(&input),
            // It ends its frame itself when told this is the end; what it gives back is sent.
            Some(Writer::Dcz(e)) => {
                let out = e.encode(&input, end)?;
                self.sink.0.lock().extend_from_slice(&out);
                Ok(())
            }
            None => Ok(()),
        };
        result.or_err(pingora_error::ErrorType::InternalError, "compressing the response body")?;
        if self.flush_each && !end && !input.is_empty() {
            let flushed = match slot.as_mut() {
                Some(Writer::Gzip(w)) => w.flush(),
                Some(Writer::Br(w)) => w.flush(),
                Some(Writer::Zstd(w)) => w.flush(),
                Some(Writer::Dcz(_)) | None => Ok(()),
            };
            flushed.or_err(pingora_error::ErrorType::InternalError, "flushing the compressed body")?;
        }
        if end {
            let finished = match slot.take() {
                Some(Writer::Gzip(w)) => w.finish().map(drop),
                // Dropping the writer ends the brotli stream (its last meta-block).
                Some(Writer::Br(w)) => {
                    drop(w.into_inner());
                    Ok(())
                }
                Some(Writer::Zstd(w)) => w.finish().map(drop),
                Some(Writer::Dcz(_)) | None => Ok(()),
            };
            finished.or_err(pingora_error::ErrorType::InternalError, "ending the compressed body")?;
        }
        let out = std::mem::take(&mut *self.sink.0.lock());
        self.bytes_out += out.len();
        *body = (!out.is_empty()).then(|| Bytes::from(out));
        Ok(())
    }

    /// Bytes in and out so far.
    pub(crate) fn sizes(&self) -> (usize, usize) {
        (self.bytes_in, self.bytes_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ae: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for a in ae {
            r.append_header("accept-encoding", *a).unwrap();
        }
        r
    }

    #[test]
    fn one_coding_per_request_whatever_the_spelling() {
        let all = [Coding::Zstd, Coding::Br, Coding::Gzip];
        assert_eq!(negotiate(&req(&["gzip, deflate, br, zstd"]), &all), Some(Coding::Zstd));
        assert_eq!(negotiate(&req(&["gzip, deflate, br"]), &all), Some(Coding::Br));
        assert_eq!(negotiate(&req(&["GZIP"]), &all), Some(Coding::Gzip));
        assert_eq!(negotiate(&req(&["br;q=0.5, gzip"]), &all), Some(Coding::Gzip), "q wins over preference");
        assert_eq!(negotiate(&req(&["zstd;q=0, *"]), &all), Some(Coding::Br));
        assert_eq!(negotiate(&req(&["identity"]), &all), None);
        assert_eq!(negotiate(&req(&[]), &all), None);
        assert_eq!(negotiate(&req(&["gzip", "br"]), &[Coding::Gzip, Coding::Br]), Some(Coding::Gzip), "route order");
        assert_eq!(negotiate(&req(&["br"]), &[]), None);
    }

    #[test]
    fn every_coding_round_trips_in_chunks() {
        use std::io::Read;
        let text: Vec<u8> = (0..2000).flat_map(|i| format!("line {i} of text\n").into_bytes()).collect();
        for coding in [Coding::Gzip, Coding::Br, Coding::Zstd] {
            let mut e = Encoder::new(coding, 5).unwrap();
            let mut out = Vec::new();
            let chunks: Vec<&[u8]> = text.chunks(7000).collect();
            for (i, c) in chunks.iter().enumerate() {
                let mut b = Some(Bytes::copy_from_slice(c));
                e.encode(&mut b, i + 1 == chunks.len()).unwrap();
                out.extend_from_slice(&b.unwrap_or_default());
            }
            let mut back = Vec::new();
            match coding {
                Coding::Gzip => flate2::read::GzDecoder::new(&out[..]).read_to_end(&mut back).map(drop).unwrap(),
                Coding::Br => brotli::Decompressor::new(&out[..], 4096).read_to_end(&mut back).map(drop).unwrap(),
                Coding::Zstd => back = zstd::decode_all(&out[..]).unwrap(),
            }
            assert_eq!(back, text, "{coding:?}");
            assert_eq!(e.sizes(), (text.len(), out.len()));
        }
    }

    #[test]
    fn only_textual_unencoded_large_enough_responses() {
        let cfg = CompressionConfig::default();
        let resp = |h: &[(&str, &str)]| {
            let mut r = ResponseHeader::build(200, None).unwrap();
            for (k, v) in h {
                r.append_header(k.to_string(), *v).unwrap();
            }
            r
        };
        assert!(eligible(&resp(&[("content-type", "application/javascript; charset=utf-8")]), &cfg));
        assert!(eligible(&resp(&[("content-type", "text/html"), ("content-length", "4096")]), &cfg));
        assert!(!eligible(&resp(&[("content-type", "text/html"), ("content-length", "100")]), &cfg));
        assert!(!eligible(&resp(&[("content-type", "image/png")]), &cfg));
        assert!(!eligible(&resp(&[("content-type", "font/woff2")]), &cfg));
        assert!(!eligible(&resp(&[("content-type", "text/css"), ("content-encoding", "gzip")]), &cfg));
        assert!(!eligible(&resp(&[("content-type", "text/css"), ("cache-control", "max-age=60, no-transform")]), &cfg));
        assert_eq!(suffixed_etag("\"abc\"", "br").as_deref(), Some("\"abc-br\""));
        assert_eq!(suffixed_etag("W/\"abc\"", "br"), None);
        assert_eq!(origin_etag("\"abc-zstd\"").as_deref(), Some("\"abc\""));
        assert_eq!(origin_etag("\"abc\""), None);
        assert_eq!(origin_etag("\"abc-dcz-0123456789abcdef\"").as_deref(), Some("\"abc\""));
        assert_eq!(origin_etag("\"abc-dcz-xyz\""), None, "not a suffix Portier writes");
        assert_eq!(origin_etag("\"abc-br-max\"").as_deref(), Some("\"abc\""), "re-compressed");
        assert_eq!(origin_etag("\"v-max\""), None, "an origin's own tag");
        let max = strongest_etag(&http::HeaderValue::from_static("\"abc-br\"")).unwrap();
        assert_eq!(max, "\"abc-br-max\"");
        assert!(strongest_etag(&http::HeaderValue::from_static("W/\"abc\"")).is_none());
    }
}
