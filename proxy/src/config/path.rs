//! The canonical spelling of a request path, defined here because config patterns are put in
//! it at load time (`/%61dmin/*` is `/admin/*`) and requests are matched in it
//! ([`crate::edge::target`] refuses what it refuses).

/// The one spelling of a request path that routing, access rules, the cache key and the
/// forwarded request all use, so no origin can read a request as another path than the route
/// did (Go's net/http, Flask and nginx decode `%61` to `a`; nginx and Flask merge slashes):
/// - percent-encoded unreserved characters are decoded (`/%61dmin` is `/admin`) and the
///   remaining escapes upper-cased (`%c3%a9` is `%C3%A9`), RFC 3986 §6.2.2;
/// - runs of `/` are one (`//admin` is `/admin`), as nginx's `merge_slashes` does;
/// - refused (400): an encoded `/` or `\` (`%2F`, `%5C`: a decoding origin would see another
///   path), an encoded control character, a malformed escape, and `;` (Tomcat and Spring drop
///   `;...` from a segment, so `/admin;/x` is `/admin/x` to them).
pub(crate) fn canonical(path: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, &'static str> {
    use std::borrow::Cow;
    if !path.iter().any(|&c| c == b'%' || c == b';') && !path.windows(2).any(|w| w == b"//") {
        return Ok(Cow::Borrowed(path));
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'%' => {
                let (Some(h), Some(l)) = (path.get(i + 1).and_then(|&c| hex(c)), path.get(i + 2).and_then(|&c| hex(c))) else {
                    return Err("the request path has a malformed percent-encoding");
                };
                let v = h << 4 | l;
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    out.push(v);
                } else if v == b'/' || v == b'\\' {
                    return Err("the request path has an encoded / or \\ (%2F, %5C)");
                } else if v < 0x20 || v == 0x7f {
                    return Err("the request path has an encoded control character");
                } else {
                    out.extend_from_slice(&[b'%', HEX[usize::from(h)], HEX[usize::from(l)]]);
                }
                i += 3;
            }
            b';' => return Err("the request path has a ; (path parameters are refused)"),
            b'/' if out.last() == Some(&b'/') => i += 1,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(Cow::Owned(out))
}
