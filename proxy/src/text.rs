//! Numbers written into strings on the hot path without `core::fmt` (its machinery cost a
//! third of the access log line and most of the cache status headers).

/// Decimal digits of `n` (itoa: two digits per step from a table; the access log writes six
/// numbers per request).
pub(crate) fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// `n` as 16 lowercase hex digits, as `{:016x}` writes it (ids and trace ids on every
/// request: `format!` cost ~1,300 instructions each).
pub(crate) fn push_hex_u64(out: &mut String, n: u64) {
    for shift in (0..16).rev() {
        out.push(char::from(b"0123456789abcdef"[((n >> (shift * 4)) & 0xf) as usize]));
    }
}

/// Decimal digits of `n`, with its sign.
pub(crate) fn push_i64(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    push_u64(out, n.unsigned_abs());
}

/// `v` with `decimals` digits after the point (at most 3), rounded, as `{:.N}` writes it for
/// the non-negative values this is used for (durations).
pub(crate) fn push_fixed(out: &mut String, v: f64, decimals: u32) {
    let decimals = decimals.min(3);
    let scale = 10u64.pow(decimals);
    let scaled = (v.max(0.0) * scale as f64).round() as u64;
    push_u64(out, scaled / scale);
    if decimals > 0 {
        out.push('.');
        let mut digits = itoa::Buffer::new();
        let frac = digits.format(scaled % scale);
        for _ in frac.len()..decimals as usize {
            out.push('0');
        }
        out.push_str(frac);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_fmt_writes_them() {
        for n in [0u64, 1, 0xabc, u64::MAX, 0x0123_4567_89ab_cdef] {
            let mut s = String::new();
            push_hex_u64(&mut s, n);
            assert_eq!(s, format!("{n:016x}"));
        }
        for n in [0i64, 7, -7, 1_234_567, i64::MIN, i64::MAX] {
            let mut s = String::new();
            push_i64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        for (v, d) in [(0.0, 1), (1.2344, 3), (12.3456, 1), (999_999.999_4, 3), (3.0, 0), (0.05, 1)] {
            let mut s = String::new();
            push_fixed(&mut s, v, d);
            assert_eq!(s, format!("{v:.*}", d as usize), "{v} {d}");
        }
    }
}
