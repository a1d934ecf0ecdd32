//! Numbers written into strings on the hot path without `core::fmt` (its machinery cost a
//! third of the access log line and most of the cache status headers).

/// Decimal digits of `n`.
pub(crate) fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[i..].iter().map(|d| char::from(*d)));
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
        let frac = scaled % scale;
        let mut div = scale / 10;
        while div > 0 {
            out.push(char::from(b'0' + (frac / div % 10) as u8));
            div /= 10;
        }
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
