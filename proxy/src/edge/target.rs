//! The request target and `Host`, checked once before anything reads them (RFC 9112 §3.2,
//! RFC 9110 §7.2). The origin, the route, the cache key and the access log all read the one
//! [`Target`] this module returns, and the request sent upstream is rewritten to it, so no two
//! of them can see different requests. Pingora keeps an unparseable target's raw bytes for the
//! wire while showing `/` to the filters; that gap is what let `GET upload-123.html` poison `/`.

use http::uri::PathAndQuery;
use pingora_http::RequestHeader;
use std::fmt;
use std::net::Ipv6Addr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `http://` or `https://` at the start of `b` (case-insensitive): the scheme and the rest.
    pub(crate) fn strip(b: &[u8]) -> Option<(Scheme, &[u8])> {
        let starts = |p: &[u8]| b.len() >= p.len() && b[..p.len()].eq_ignore_ascii_case(p);
        if starts(b"http://") {
            Some((Scheme::Http, &b[7..]))
        } else if starts(b"https://") {
            Some((Scheme::Https, &b[8..]))
        } else {
            None
        }
    }
}

/// `uri-host [ ":" port ]`: the host lower-cased, the port dropped when it is the scheme's
/// default, so `H:80` and `h` are one authority. A host never contains `/`, `?`, `#`, `@` or
/// whitespace, which is what makes `scheme://authority/path` an unambiguous key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Authority {
    host: Box<str>,
    port: Option<u16>,
}

impl Authority {
    pub(crate) fn parse(b: &[u8], scheme: Scheme) -> Result<Authority, &'static str> {
        if b.is_empty() {
            return Err("empty host");
        }
        let (host, port) = if b[0] == b'[' {
            let close = b.iter().position(|&c| c == b']').ok_or("unclosed IPv6 literal")?;
            let inner = std::str::from_utf8(&b[1..close]).map_err(|_| "invalid IPv6 literal")?;
            let ip: Ipv6Addr = inner.parse().map_err(|_| "invalid IPv6 literal")?;
            let rest = &b[close + 1..];
            let port = match rest.split_first() {
                None => None,
                Some((b':', p)) => Some(p),
                Some(_) => return Err("unexpected bytes after the IPv6 literal"),
            };
            (format!("[{ip}]"), port)
        } else {
            let (name, port) = match b.iter().position(|&c| c == b':') {
                Some(i) => (&b[..i], Some(&b[i + 1..])),
                None => (b, None),
            };
            // `admin.test.` is the fully qualified `admin.test`: one name, one route and key.
            let name = name.strip_suffix(b".").unwrap_or(name);
            if name.is_empty() {
                return Err("empty host");
            }
            if !valid_reg_name(name) {
                return Err("host has a character outside RFC 3986 reg-name (percent-encoding is refused)");
            }
            if name.first() == Some(&b'.') || name.last() == Some(&b'.') || name.windows(2).any(|w| w == b"..") {
                return Err("host has an empty label");
            }
            // ASCII-only after the check above.
            (String::from_utf8_lossy(name).to_ascii_lowercase(), port)
        };
        let port = match port {
            // `host:` is allowed by the grammar and means the default port.
            None | Some([]) => None,
            Some(p) if p.len() <= 5 && p.iter().all(u8::is_ascii_digit) => {
                let n: u32 = p.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0'));
                Some(u16::try_from(n).map_err(|_| "port out of range")?)
            }
            Some(_) => return Err("port is not a number up to 65535"),
        };
        Ok(Authority { host: host.into(), port: port.filter(|p| *p != scheme.default_port()) })
    }

    /// The host alone (`[::1]` keeps its brackets), for routing.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }
}

impl Authority {
    /// Appends `host[:port]` (Display without core::fmt: this runs for every request's key).
    pub(crate) fn push_to(&self, out: &mut String) {
        out.push_str(&self.host);
        if let Some(p) = self.port {
            out.push(':');
            crate::text::push_u64(out, u64::from(p));
        }
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

fn is_unreserved_or_sub_delim(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&c)
}

/// RFC 3986 reg-name without percent-encoding: `admin%2etest` would be another spelling of
/// `admin.test` to an origin that decodes it, while routes match the bytes.
fn valid_reg_name(b: &[u8]) -> bool {
    b.iter().all(|&c| is_unreserved_or_sub_delim(c))
}

/// `Host` as sent, less one trailing dot on its name (`A.test.:8080` → `A.test:8080`), when it
/// has one: the origin must get the host the route and key matched.
fn without_trailing_dot(host: &[u8]) -> Option<Vec<u8>> {
    if host.first() == Some(&b'[') {
        return None;
    }
    let end = host.iter().position(|&c| c == b':').unwrap_or(host.len());
    (end > 1 && host[end - 1] == b'.').then(|| [&host[..end - 1], &host[end..]].concat())
}

/// What the request asks for, once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) scheme: Scheme,
    /// None only for an HTTP/1.0 request without `Host`.
    pub(crate) authority: Option<Authority>,
    /// `OPTIONS *`: about the server, not a resource; answered without an origin.
    pub(crate) asterisk: bool,
    pub(crate) path_and_query: PathAndQuery,
}

impl Target {
    pub(crate) fn path(&self) -> &str {
        self.path_and_query.path()
    }

    pub(crate) fn host(&self) -> &str {
        self.authority.as_ref().map_or("", Authority::host)
    }
}

/// Why a request was refused with 400; the text goes into the error page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub(crate) &'static str);

/// An origin-form target (`/path?query`): visible ASCII, no fragment, no backslash in the path
/// (some origins read it as `/`), and no `.` or `..` segment (an origin that resolves them would
/// serve `/a/../admin` as `/admin` while the route and key saw `/a/`). Returns it with its path
/// in canonical form ([`canonical_path`]).
pub(crate) fn origin_form(b: &[u8]) -> Result<PathAndQuery, Refused> {
    if b.first() != Some(&b'/') {
        return Err(Refused("the request target must start with / (origin-form)"));
    }
    if let Some(c) = b.iter().find(|&&c| !(0x21..0x7f).contains(&c) || c == b'#') {
        return Err(Refused(if *c == b'#' {
            "the request target has a fragment (#)"
        } else {
            "the request target has a byte that is not visible ASCII"
        }));
    }
    let (path, query) = b.split_at(b.iter().position(|&c| c == b'?').unwrap_or(b.len()));
    if path.contains(&b'\\') {
        return Err(Refused("the request path has a backslash"));
    }
    let path = canonical_path(path)?;
    if path.split(|&c| c == b'/').any(is_dot_segment) {
        return Err(Refused("the request path has a . or .. segment"));
    }
    let invalid = |_| Refused("the request target is not a valid URI path");
    match path {
        std::borrow::Cow::Borrowed(_) => PathAndQuery::try_from(b).map_err(invalid),
        std::borrow::Cow::Owned(mut p) => {
            p.extend_from_slice(query);
            PathAndQuery::try_from(p).map_err(invalid)
        }
    }
}

/// [`crate::config::path::canonical`], refused with its reason.
pub(crate) fn canonical_path(path: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, Refused> {
    crate::config::path::canonical(path).map_err(Refused)
}

/// What follows `scheme://`, split where the authority ends (at `/`, `?`, `#` or the end).
pub(crate) fn split_authority(rest: &[u8]) -> (&[u8], &[u8]) {
    rest.split_at(rest.iter().position(|&c| matches!(c, b'/' | b'?' | b'#')).unwrap_or(rest.len()))
}

/// The path and query after an authority as origin-form: empty is `/`, `?q` is `/?q`.
pub(crate) fn rooted_origin_form(pq: &[u8]) -> Result<PathAndQuery, Refused> {
    match pq.first() {
        None => origin_form(b"/"),
        Some(b'?') => origin_form(&[b"/", pq].concat()),
        Some(_) => origin_form(pq),
    }
}

/// `.`, `..` and their percent-encoded spellings (`%2e`, `.%2E`, ...).
fn is_dot_segment(seg: &[u8]) -> bool {
    let mut dots = 0;
    let mut i = 0;
    while i < seg.len() {
        if seg[i] == b'.' {
            i += 1;
        } else if seg[i..].len() >= 3 && seg[i] == b'%' && seg[i + 1] == b'2' && seg[i + 2].eq_ignore_ascii_case(&b'e') {
            i += 3;
        } else {
            return false;
        }
        dots += 1;
    }
    (1..=2).contains(&dots)
}

/// The `Host` field: exactly one, valid; absent only before HTTP/1.1. An HTTP/2 or HTTP/3 request
/// names its authority in `:authority` (the URI) and usually sends no `Host`: the field is
/// written from it (RFC 9113 §8.3.1, RFC 9114 §4.3.1), because the URI's authority is dropped when the request
/// is rewritten to origin-form, and an HTTP/1.1 origin must get the `Host` an HTTP/1.1 client
/// would have sent (Pingora would otherwise send `Host: `, which nginx refuses with 400).
fn host_field(req: &mut RequestHeader, scheme: Scheme) -> Result<Option<Authority>, Refused> {
    let from_uri = match req.uri.authority() {
        Some(a) if req.version >= http::Version::HTTP_2 => {
            Some(Authority::parse(a.as_str().as_bytes(), scheme).map_err(|_| Refused(":authority is not uri-host[:port]"))?)
        }
        _ => None,
    };
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    let Some(first) = hosts.next() else {
        if let Some(a) = from_uri {
            let value = req.uri.authority().map(|a| a.as_str().as_bytes().to_vec()).unwrap_or_default();
            let value = without_trailing_dot(&value).unwrap_or(value);
            let value = http::HeaderValue::from_bytes(&value).map_err(|_| Refused(":authority is not a Host"))?;
            req.insert_header(http::header::HOST, value).map_err(|_| Refused(":authority is not a Host"))?;
            return Ok(Some(a));
        }
        return if req.version >= http::Version::HTTP_11 { Err(Refused("HTTP/1.1 requests must have a Host")) } else { Ok(None) };
    };
    if hosts.next().is_some() {
        return Err(Refused("more than one Host"));
    }
    let host = Authority::parse(first.as_bytes(), scheme).map_err(|_| Refused("Host is not uri-host[:port]"))?;
    if let Some(v) = without_trailing_dot(first.as_bytes()) {
        let v = http::HeaderValue::from_bytes(&v).map_err(|_| Refused("Host is not uri-host[:port]"))?;
        req.insert_header(http::header::HOST, v).map_err(|_| Refused("Host is not uri-host[:port]"))?;
    }
    // Both present: one request naming two authorities is malformed (RFC 9113 §8.3.1).
    if from_uri.is_some_and(|a| a != host) {
        return Err(Refused(":authority and Host name different authorities"));
    }
    Ok(Some(host))
}

/// The `:scheme` of HTTP/2 and HTTP/3 must be the connection's: a client saying `http` over TLS (or `https`
/// in cleartext) would be keyed and forwarded as one scheme while speaking the other.
fn h2_scheme(req: &RequestHeader, scheme: Scheme) -> Result<(), Refused> {
    match req.uri.scheme_str() {
        Some(s) if req.version >= http::Version::HTTP_2 && !s.eq_ignore_ascii_case(scheme.as_str()) => {
            Err(Refused(":scheme is not this connection's scheme"))
        }
        _ => Ok(()),
    }
}

/// Several `Cookie` fields become one, joined with `"; "`: HTTP/2 clients split cookies into
/// one field each for compression (RFC 9113 §8.2.3), and an HTTP/1.1 origin, `Vary: Cookie`
/// and the cache key must see the single field an HTTP/1.1 client sends (RFC 6265 §5.4).
fn join_cookies(req: &mut RequestHeader) -> Result<(), Refused> {
    let mut cookies = req.headers.get_all(http::header::COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else { return Ok(()) };
    let mut joined = first.as_bytes().to_vec();
    for v in req.headers.get_all(http::header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    let value = http::HeaderValue::from_bytes(&joined).map_err(|_| Refused("a Cookie field is not a valid field value"))?;
    req.insert_header(http::header::COOKIE, value).map_err(|_| Refused("a Cookie field is not a valid field value"))
}

/// `Content-Length` next to `Transfer-Encoding` (RFC 9112 §6.1): the two can disagree on
/// where the body ends (request smuggling). Pingora itself drops the `Content-Length` and
/// closes such connections; this refuses one that reaches Portier another way.
fn framing(req: &RequestHeader) -> Result<(), Refused> {
    let h = &req.headers;
    if h.contains_key(http::header::TRANSFER_ENCODING) && h.contains_key(http::header::CONTENT_LENGTH) {
        return Err(Refused("Content-Length and Transfer-Encoding together"));
    }
    Ok(())
}

/// A message's declared `Content-Length` (request or response), when it is one number.
pub(crate) fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

/// Whether the request announces a body (`Transfer-Encoding`, or a `Content-Length` other than 0).
pub(crate) fn has_body(req: &RequestHeader) -> bool {
    let h = &req.headers;
    h.contains_key(http::header::TRANSFER_ENCODING)
        || h.get_all(http::header::CONTENT_LENGTH).iter().any(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) != Some(0))
}

/// Checks the request's target and `Host` and rewrites the request to origin-form, so what
/// is sent upstream is exactly what was checked. `scheme` is the connection's.
pub(crate) fn accept(req: &mut RequestHeader, scheme: Scheme) -> Result<Target, Refused> {
    framing(req)?;
    h2_scheme(req, scheme)?;
    let host = host_field(req, scheme)?;
    join_cookies(req)?;
    let raw = req.raw_path();
    if raw == b"*" {
        if req.method != http::Method::OPTIONS {
            return Err(Refused("only OPTIONS may use the * target"));
        }
        return Ok(Target { scheme, authority: host, asterisk: true, path_and_query: PathAndQuery::from_static("/") });
    }
    let (authority, path_and_query) = if raw.first() == Some(&b'/') {
        (host, origin_form(raw)?)
    } else if let Some((target_scheme, rest)) = Scheme::strip(raw) {
        // Absolute-form (§3.2.2): the authority must be the connection's scheme and the same
        // authority as Host, so it cannot name a resource the key does not.
        if target_scheme != scheme {
            return Err(Refused("the request target's scheme is not this connection's"));
        }
        let (auth, pq) = split_authority(rest);
        if auth.contains(&b'@') {
            return Err(Refused("the request target has userinfo"));
        }
        let auth = Authority::parse(auth, scheme).map_err(|_| Refused("the request target's authority is not uri-host[:port]"))?;
        if host.as_ref().is_some_and(|h| *h != auth) {
            return Err(Refused("the request target's authority differs from Host"));
        }
        let pq = rooted_origin_form(pq)?;
        if host.is_none() {
            let value = auth.to_string();
            req.insert_header(http::header::HOST, value).map_err(|_| Refused("the request target's authority is not a Host"))?;
        }
        (Some(auth), pq)
    } else {
        return Err(Refused("the request target is not origin-form (/path) or an http(s) URL"));
    };
    req.set_uri(http::Uri::from(path_and_query.clone()));
    Ok(Target { scheme, authority, asterisk: false, path_and_query })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &[u8], host: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target, None).unwrap();
        for h in host {
            r.append_header("host", *h).unwrap();
        }
        r
    }

    fn ok(target: &[u8], host: &[&str]) -> (String, String, String) {
        let mut r = req(target, host);
        let t = accept(&mut r, Scheme::Http).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(target)));
        let host = r.headers.get("host").map(|h| h.to_str().unwrap().to_string()).unwrap_or_default();
        (t.authority.map(|a| a.to_string()).unwrap_or_default(), String::from_utf8(r.raw_path().to_vec()).unwrap(), host)
    }

    #[test]
    fn origin_and_absolute_form_become_one_origin_form_target() {
        assert_eq!(
            ok(b"/a/b?x=1&y=%20", &["Example.COM:8080"]),
            ("example.com:8080".into(), "/a/b?x=1&y=%20".into(), "Example.COM:8080".into())
        );
        assert_eq!(ok(b"/", &["h:80"]).0, "h", "the default port is dropped");
        assert_eq!(ok(b"/", &["h:"]).0, "h");
        assert_eq!(ok(b"/", &["[::1]:8080"]).0, "[::1]:8080");
        for (raw, scheme) in [(&b"[::1]:8080"[..], Scheme::Http), (b"h:443", Scheme::Http), (b"H.example", Scheme::Https)] {
            let a = Authority::parse(raw, scheme).unwrap();
            let mut pushed = String::new();
            a.push_to(&mut pushed);
            assert_eq!(pushed, a.to_string(), "push_to writes what Display does");
        }
        assert_eq!(ok(b"http://H:8080/x?q", &["h:8080"]), ("h:8080".into(), "/x?q".into(), "h:8080".into()));
        assert_eq!(ok(b"HTTP://h?q", &["h"]).1, "/?q");
        assert_eq!(ok(b"http://h", &["h"]).1, "/");
        assert_eq!(ok(b"/search?q={a}|b\\c", &["h"]).1, "/search?q={a}|b\\c", "what browsers send raw in a query");
        assert_eq!(ok(b"/a..b/.c/...", &["h"]).1, "/a..b/.c/...");
    }

    fn h2(authority: &str, scheme: &str, host: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/x?q", None).unwrap();
        r.set_uri(format!("{scheme}://{authority}/x?q").parse().unwrap());
        r.set_version(http::Version::HTTP_2);
        for h in host {
            r.append_header("host", *h).unwrap();
        }
        r
    }

    #[test]
    fn http2_authority_becomes_the_host_an_http1_client_would_send() {
        let mut r = h2("A.test:8443", "https", &[]);
        let t = accept(&mut r, Scheme::Https).unwrap();
        assert_eq!(t.authority.unwrap().to_string(), "a.test:8443");
        assert_eq!(r.headers.get_all("host").iter().collect::<Vec<_>>(), ["A.test:8443"], "written as sent");
        assert_eq!(r.raw_path(), b"/x?q", "origin-form upstream");
        // A Host equal to :authority is kept; a different one is two authorities.
        assert!(accept(&mut h2("a.test", "https", &["a.test:443"]), Scheme::Https).is_ok());
        assert!(accept(&mut h2("a.test", "https", &["b.test"]), Scheme::Https).is_err());
        // :scheme must be the connection's.
        assert!(accept(&mut h2("a.test", "http", &[]), Scheme::Https).is_err());
        assert!(accept(&mut h2("a.test", "https", &[]), Scheme::Http).is_err());
        assert!(accept(&mut h2("a.test", "http", &[]), Scheme::Http).is_ok());
    }

    #[test]
    fn several_cookie_fields_become_one() {
        let mut r = req(b"/", &["h"]);
        for c in ["a=1", "b=2", "c=3"] {
            r.append_header("cookie", c).unwrap();
        }
        accept(&mut r, Scheme::Http).unwrap();
        assert_eq!(r.headers.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1; b=2; c=3"]);
        let mut one = req(b"/", &["h"]);
        one.append_header("cookie", "a=1; b=2").unwrap();
        accept(&mut one, Scheme::Http).unwrap();
        assert_eq!(one.headers.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1; b=2"]);
    }

    #[test]
    fn one_canonical_path_for_every_spelling() {
        for (sent, canonical) in [
            ("/admin/x", "/admin/x"),
            ("/%61dmin/x", "/admin/x"),
            ("/%61%64%6d%69%6e/x", "/admin/x"),
            ("//admin/x", "/admin/x"),
            ("/admin//x///y", "/admin/x/y"),
            ("/%7euser/%c3%a9?q=%61;b", "/~user/%C3%A9?q=%61;b"),
            ("/a%20b/%2D%2e%5F", "/a%20b/-._"),
        ] {
            assert_eq!(ok(sent.as_bytes(), &["h"]).1, canonical, "{sent}");
        }
        let refused = |target: &str| accept(&mut req(target.as_bytes(), &["h"]), Scheme::Http).map_err(|e| e.0);
        for (target, why) in [
            ("/admin;/x", ";"),
            ("/admin;jsessionid=1", ";"),
            ("/admin%2fx", "encoded /"),
            ("/admin%2Fx", "encoded /"),
            ("/a%5cb", "encoded /"),
            ("/a%00b", "control"),
            ("/a%0Ab", "control"),
            ("/a%zz", "malformed"),
            ("/a%4", "malformed"),
            ("/%2e%2e/admin", ". or .."),
            ("/a/%2E/b", ". or .."),
        ] {
            let e = refused(target).expect_err(target);
            assert!(e.contains(why), "{target}: {e}");
        }
    }

    #[test]
    fn one_host_name_for_every_spelling() {
        let mut r = req(b"/", &["Admin.Test.:8080"]);
        let t = accept(&mut r, Scheme::Http).unwrap();
        assert_eq!(t.authority.unwrap().to_string(), "admin.test:8080");
        assert_eq!(r.headers.get("host").unwrap(), "Admin.Test:8080", "the origin gets the host the route matched");
        assert_eq!(ok(b"/", &["admin.test."]).0, "admin.test");
        assert_eq!(ok(b"/", &["admin.test"]).2, "admin.test", "a Host without the dot is forwarded untouched");
        for h in ["admin%2etest", "%61dmin.test", ".", "a..", "[::1]."] {
            assert!(accept(&mut req(b"/", &[h]), Scheme::Http).is_err(), "Host {h:?} must be refused");
        }
        let mut r = h2("admin.test.:8443", "https", &[]);
        accept(&mut r, Scheme::Https).unwrap();
        assert_eq!(r.headers.get("host").unwrap(), "admin.test:8443");
    }

    #[test]
    fn http10_without_host_takes_the_targets_authority() {
        let mut r = req(b"http://h:81/x", &[]);
        r.set_version(http::Version::HTTP_10);
        let t = accept(&mut r, Scheme::Http).unwrap();
        assert_eq!(t.authority.unwrap().to_string(), "h:81");
        assert_eq!(r.headers.get("host").unwrap(), "h:81");
        let mut r = req(b"/x", &[]);
        r.set_version(http::Version::HTTP_10);
        assert_eq!(accept(&mut r, Scheme::Http).unwrap().authority, None);
    }

    #[test]
    fn everything_else_is_refused() {
        let refused = |target: &[u8], host: &[&str]| accept(&mut req(target, host), Scheme::Http).is_err();
        for t in [
            &b"upload-123.html"[..],
            b"../x",
            b"a:b/c",
            b"\\\\x",
            b"%20/x",
            b"https://h/x",
            b"ftp://h/x",
            b"http://u@h/x",
            b"http://other/x",
            b"http:///x",
            b"*",
            b"h:443",
            b"/a/../b",
            b"/a/./b",
            b"/..",
            b"/a/%2e%2E/b",
            b"/a/.%2e",
            b"/a\\b",
            b"/caf\xc3\xa9",
        ] {
            assert!(refused(t, &["h"]), "{:?} must be refused", String::from_utf8_lossy(t));
        }
        for h in ["v/a", "h h", "h:x", "h:65536", "u@h", "", "[::1", "[zz]", "h?", "h#"] {
            assert!(refused(b"/", &[h]), "Host {h:?} must be refused");
        }
        assert!(refused(b"/", &[]), "HTTP/1.1 without Host");
        let mut fat = req(b"/", &["h"]);
        fat.insert_header("content-length", "5").unwrap();
        assert!(has_body(&fat), "a GET with a body");
        let mut zero = req(b"/", &["h"]);
        zero.insert_header("content-length", "0").unwrap();
        assert!(!has_body(&zero), "Content-Length: 0 is no body");
        let mut both = RequestHeader::build("POST", b"/", None).unwrap();
        both.insert_header("host", "h").unwrap();
        both.insert_header("content-length", "5").unwrap();
        both.insert_header("transfer-encoding", "chunked").unwrap();
        assert!(accept(&mut both, Scheme::Http).is_err(), "CL and TE together");
        assert!(origin_form(b"/a#frag").is_err(), "Pingora drops a fragment; one reaching here is refused");
        assert!(refused(b"/", &["h", "h"]), "two Host fields");
        let mut r = RequestHeader::build("OPTIONS", b"*", None).unwrap();
        r.insert_header("host", "h").unwrap();
        assert!(accept(&mut r, Scheme::Http).unwrap().asterisk);
    }
}
