//! Config values that are patterns or protocol tokens, parsed once at load time (through
//! `FromStr`, so a bad one is a config error with its key path) and matched at run time
//! without re-parsing.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A route or rule path: `/health` (exact) or `/api/*` (the prefix `/api/`, and `/api` itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathPattern {
    /// Without the trailing `*`.
    path: String,
    prefix: bool,
}

impl FromStr for PathPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!("{s:?} must start with '/' (e.g. \"/api/*\" or \"/health\")"));
        }
        let (path, prefix) = match s.strip_suffix('*') {
            Some(p) => (p, true),
            None => (s, false),
        };
        if path.contains('*') {
            return Err(format!("{s:?}: '*' is only allowed at the end, as a prefix match"));
        }
        // Requests arrive percent-encoded (a target is visible ASCII), so `/café` is compared
        // as browsers send it: `/caf%C3%A9`.
        let mut encoded = String::with_capacity(path.len());
        for b in path.bytes() {
            if (0x21..0x7f).contains(&b) {
                encoded.push(char::from(b));
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        // In the canonical form requests are matched in (super::path::canonical), so
        // `/%61dmin/*` is `/admin/*`, and a pattern no request can match is an error.
        let canonical = super::path::canonical(encoded.as_bytes()).map_err(|e| format!("{s:?}: {e}"))?;
        let path = String::from_utf8_lossy(&canonical).into_owned();
        Ok(PathPattern { path, prefix })
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if self.prefix {
            f.write_str("*")?;
        }
        Ok(())
    }
}

impl PathPattern {
    /// `/*`: every path.
    pub fn everything() -> PathPattern {
        PathPattern { path: "/".into(), prefix: true }
    }

    /// ASCII case does not count: for a case-insensitive origin (Express by default, IIS,
    /// ASP.NET) `/ADMIN/x` is `/admin/x`, and a rule must not be walked around by spelling.
    /// Where the origin does tell the two apart, the cost is a rule applying to both. For the
    /// same reason an exact pattern matches with or without one trailing `/` (Express and
    /// Flask serve `/admin/` as `/admin`; Django redirects one to the other).
    pub fn matches(&self, path: &str) -> bool {
        let (p, pat) = (path.as_bytes(), self.path.as_bytes());
        if !self.prefix {
            let strip = |s: &'_ [u8]| -> usize {
                if s.len() > 1 && s.ends_with(b"/") {
                    s.len() - 1
                } else {
                    s.len()
                }
            };
            return p[..strip(p)].eq_ignore_ascii_case(&pat[..strip(pat)]);
        }
        let starts = p.len() >= pat.len() && p[..pat.len()].eq_ignore_ascii_case(pat);
        starts || pat.strip_suffix(b"/").is_some_and(|bare| p.eq_ignore_ascii_case(bare))
    }
}

/// A route's `dictionary`: the URL pattern sent as `Use-As-Dictionary: match="…"` (RFC 9842
/// §2.1.1), a path where `*` stands for any run of characters (`/assets/*.js`). Only the
/// URLPattern syntax Portier can match itself is accepted: no named groups, regular
/// expressions, query or fragment, and nothing that would need escaping in a quoted string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DictionaryMatch(String);

impl FromStr for DictionaryMatch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!("{s:?} must be a path starting with '/' (e.g. \"/assets/*.js\")"));
        }
        if let Some(c) =
            s.chars().find(|c| !c.is_ascii_graphic() || matches!(c, '"' | '\\' | ':' | '(' | ')' | '{' | '}' | '?' | '#' | '+'))
        {
            return Err(format!("{s:?}: {c:?} is not allowed (a path with '*' wildcards only)"));
        }
        if s.len() > 256 {
            return Err(format!("{s:?} is longer than 256 characters"));
        }
        Ok(DictionaryMatch(s.to_string()))
    }
}

impl fmt::Display for DictionaryMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl DictionaryMatch {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `path` (the request's, without its query) matches, `*` standing for any run of
    /// characters, as the browser matches it before it offers the dictionary.
    pub fn matches(&self, path: &str) -> bool {
        glob(self.0.as_bytes(), path.as_bytes())
    }
}

/// `*` matches any run of bytes; iterative, with one backtrack point (linear in practice, no
/// recursion an attacker's path could deepen).
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// A route's host: `example.com` or `*.example.com` (any subdomain, not the domain itself),
/// lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HostPattern {
    Exact(String),
    /// `.example.com`, the suffix a matching host ends with.
    Suffix(String),
}

impl FromStr for HostPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        let (bare, wildcard) = match lower.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (lower.as_str(), false),
        };
        let ok = !bare.is_empty() && bare.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
        if !ok {
            return Err(format!("{s:?} is not a host name or *.domain pattern"));
        }
        Ok(if wildcard { HostPattern::Suffix(format!(".{bare}")) } else { HostPattern::Exact(bare.to_string()) })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

impl HostPattern {
    /// `host` without its port, as the checked request target gives it (lower-case).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h),
            HostPattern::Suffix(s) => host.len() > s.len() && host[host.len() - s.len()..].eq_ignore_ascii_case(s),
        }
    }
}

/// What this Portier calls itself in `Cache-Status` (RFC 9211 §2: the cache's identifier)
/// and `Via` (RFC 9110 §7.6.3: its pseudonym): a token that starts with a letter, so it is
/// both an HTTP token and a structured-field token. Kept as the header value to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pseudonym {
    name: String,
    /// `Via` values for a message received over HTTP/1.0, 1.1 and 2, made once: the hit path
    /// writes one on every response.
    via: [http::HeaderValue; 4],
}

impl FromStr for Pseudonym {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        let ok = s.len() <= 64 && s.as_bytes().first().is_some_and(u8::is_ascii_alphabetic) && s.bytes().all(tchar);
        let bad = || format!("{s:?} is not a name for headers: letters first, then letters, digits or -._~ (at most 64)");
        if !ok {
            return Err(bad());
        }
        let via = |v: &str| http::HeaderValue::from_str(&format!("{v} {s}")).map_err(|_| bad());
        Ok(Pseudonym { name: s.to_string(), via: [via("1.0")?, via("1.1")?, via("2")?, via("3")?] })
    }
}

impl Pseudonym {
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// `<version> <name>` for a message received over `version`.
    pub fn via(&self, version: http::Version) -> &http::HeaderValue {
        match version {
            http::Version::HTTP_09 | http::Version::HTTP_10 => &self.via[0],
            http::Version::HTTP_2 => &self.via[2],
            http::Version::HTTP_3 => &self.via[3],
            _ => &self.via[1],
        }
    }
}

impl Default for Pseudonym {
    fn default() -> Self {
        Pseudonym {
            name: "portier".into(),
            via: [
                http::HeaderValue::from_static("1.0 portier"),
                http::HeaderValue::from_static("1.1 portier"),
                http::HeaderValue::from_static("2 portier"),
                http::HeaderValue::from_static("3 portier"),
            ],
        }
    }
}

/// An HTTP method in config; written in any case, stored upper-case (`post` is `POST`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Method(pub http::Method);

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("\"\" is not an HTTP method".into());
        }
        http::Method::from_bytes(s.to_ascii_uppercase().as_bytes()).map(Method).map_err(|_| format!("{s:?} is not an HTTP method"))
    }
}

/// A client address range: `203.0.113.0/24`, `2001:db8::/32`, or one address (`198.51.100.17`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr(pub ipnet::IpNet);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let net = match s.parse::<ipnet::IpNet>() {
            Ok(net) => net.trunc(),
            Err(_) => s
                .parse::<std::net::IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| format!("{s:?} is not an IP address or CIDR range (e.g. \"203.0.113.0/24\")"))?,
        };
        Cidr::unmapped(net).map_err(|why| format!("{s:?}: {why}"))
    }
}

impl Cidr {
    /// Clients are compared as IPv4 when they are IPv4-mapped IPv6 (`::ffff:10.0.0.1`), so a
    /// range written in that form would match nothing: it becomes the IPv4 range it means
    /// (`::ffff:127.0.0.1` → `127.0.0.1/32`, `::ffff:0:0/96` → `0.0.0.0/0`). A range that
    /// covers part of the mapped block but is wider (`::fffe:0:0/95`) is refused: half of it
    /// would silently never match.
    fn unmapped(net: ipnet::IpNet) -> Result<Cidr, &'static str> {
        const MAPPED: ipnet::Ipv6Net = match ipnet::Ipv6Net::new(std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96) {
            Ok(n) => n,
            Err(_) => panic!("a valid prefix"),
        };
        let ipnet::IpNet::V6(v6) = net else { return Ok(Cidr(net)) };
        if MAPPED.contains(&v6) {
            let v4 = v6.network().to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            let v4 = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_err(|_| "not a valid IPv4-mapped range")?;
            return Ok(Cidr(ipnet::IpNet::V4(v4)));
        }
        if v6.contains(&MAPPED) && v6.prefix_len() > 0 {
            return Err("covers the IPv4-mapped block (::ffff:0:0/96) and more: write the IPv4 part as an IPv4 range");
        }
        Ok(Cidr(net))
    }

    /// IPv4-mapped IPv6 clients (`::ffff:10.0.0.1`) match IPv4 ranges.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.0.contains(&unmapped(ip))
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, how a dual-stack listener sees IPv4
/// clients) as the IPv4 address it is; any other address as it is.
pub(crate) fn unmapped(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// A bcrypt hash (`$2a$`, `$2b$` or `$2y$`), as `caddy hash-password` and
/// `portier hash-password` write them; checked at load time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BcryptHash(pub String);

impl FromStr for BcryptHash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let known = ["$2a$", "$2b$", "$2y$"].iter().any(|p| s.starts_with(p));
        if !known || s.parse::<bcrypt::HashParts>().is_err() {
            return Err("not a bcrypt hash ($2a$/$2b$/$2y$, 60 characters): make one with `portier hash-password`".into());
        }
        Ok(BcryptHash(s.to_string()))
    }
}

/// Config values read from TOML strings through `FromStr` and written back as strings
/// (serde's `try_from = "String"` and `into = "String"`).
macro_rules! string_form {
    ($($t:ty => $to_string:expr),* $(,)?) => {$(
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }

        impl From<$t> for String {
            fn from(v: $t) -> String {
                $to_string(v)
            }
        }
    )*};
}

string_form!(
    PathPattern => |p: PathPattern| p.to_string(),
    HostPattern => |h: HostPattern| h.to_string(),
    Method => |m: Method| m.0.to_string(),
    Cidr => |c: Cidr| c.0.to_string(),
    BcryptHash => |h: BcryptHash| h.0,
    Pseudonym => |n: Pseudonym| n.as_str().to_string(),
    DictionaryMatch => |m: DictionaryMatch| m.0,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_once_and_match() {
        let p: PathPattern = "/api/*".parse().unwrap();
        assert!(p.matches("/api/x") && p.matches("/api") && !p.matches("/apix"));
        let e: PathPattern = "/health".parse().unwrap();
        assert!(e.matches("/health") && !e.matches("/healthz"));
        assert!(
            e.matches("/health/") && e.matches("/HEALTH/") && !e.matches("/health/x"),
            "one trailing slash is the same resource to most origins"
        );
        assert!("/a/".parse::<PathPattern>().unwrap().matches("/a") && "/".parse::<PathPattern>().unwrap().matches("/"));
        assert!("/caf\u{e9}".parse::<PathPattern>().unwrap().matches("/caf%C3%A9"), "a multi-byte last character is a path like any other");
        assert!("/caf\u{e9}/*".parse::<PathPattern>().unwrap().matches("/caf%C3%A9/x"));
        assert!("/a*b".parse::<PathPattern>().is_err());
        let d: DictionaryMatch = "/assets/*.js".parse().unwrap();
        assert!(
            d.matches("/assets/app.v2.js") && d.matches("/assets/a/b.js") && !d.matches("/assets/app.css") && !d.matches("/x/assets/a.js")
        );
        assert!(
            "/a/*/b*".parse::<DictionaryMatch>().unwrap().matches("/a/x/bcd")
                && !"/a/*/b".parse::<DictionaryMatch>().unwrap().matches("/a/x/c")
        );
        for bad in ["assets/*.js", "/a/:id", "/a?x", "/a\"b", "/a b", "/(.*)"] {
            assert!(bad.parse::<DictionaryMatch>().is_err(), "{bad}");
        }
        assert!("api".parse::<PathPattern>().is_err());
        let h: HostPattern = "*.Example.com".parse().unwrap();
        assert!(h.matches("a.example.com") && !h.matches("example.com"));
        assert!("ex ample".parse::<HostPattern>().is_err() && "a/b".parse::<HostPattern>().is_err());
        assert_eq!("post".parse::<Method>().unwrap().0, http::Method::POST);
        assert!("P OST".parse::<Method>().is_err());
        let c: Cidr = "203.0.113.9/24".parse().unwrap();
        assert!(c.contains("203.0.113.200".parse().unwrap()) && !c.contains("203.0.114.1".parse().unwrap()));
        let one: Cidr = "127.0.0.2".parse().unwrap();
        assert!(one.contains("::ffff:127.0.0.2".parse().unwrap()) && !one.contains("127.0.0.1".parse().unwrap()));
        assert!("2001:db8::/32".parse::<Cidr>().unwrap().contains("2001:db8::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err() && "ten".parse::<Cidr>().is_err());
        let caddy = "$2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG";
        assert!(caddy.parse::<BcryptHash>().is_ok(), "Caddy's documented example hash");
        assert!("$1$abc".parse::<BcryptHash>().is_err() && "plain".parse::<BcryptHash>().is_err());
    }
}
