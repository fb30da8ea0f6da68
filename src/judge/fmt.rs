//! Number formatting for explanations: the same words in chat, CLI, API and logs.

/// `38107` → `38 107` (thin grouping, as in the product's examples).
pub fn count(n: f64) -> String {
    if !n.is_finite() {
        return "?".into();
    }
    let rounded = n.round();
    if (n - rounded).abs() > 0.05 && n.abs() < 1000.0 {
        return format!("{n:.1}");
    }
    let s = format!("{:.0}", rounded.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    if rounded < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

/// A share as a percentage with sensible precision (`2.31 %`, `0.042 %`).
pub fn pct(x: f64) -> String {
    if !x.is_finite() {
        return "?".into();
    }
    let p = x * 100.0;
    if p == 0.0 {
        "0 %".into()
    } else if p.abs() >= 10.0 {
        format!("{p:.1} %")
    } else if p.abs() >= 0.1 {
        format!("{p:.2} %")
    } else {
        format!("{p:.3} %")
    }
}

/// A ratio as a multiplier (`x2.4`, `x1.07`).
pub fn times(x: f64) -> String {
    if x.is_nan() {
        "x?".into()
    } else if x.is_infinite() || x >= 1000.0 {
        "x1000+".into()
    } else {
        format!("x{x:.*}", decimals(x, 10.0, 2.0))
    }
}

/// How many decimals a number gets: none from `whole` up, one from `one` up, else two.
fn decimals(x: f64, whole: f64, one: f64) -> usize {
    if x >= whole {
        0
    } else if x >= one {
        1
    } else {
        2
    }
}

/// An e-value for reading: `412`, `3.2`, `0.41`, `1e6+`.
pub fn evidence(e: f64) -> String {
    if e.is_nan() {
        "?".into()
    } else if e >= 1e6 {
        "1e6+".into()
    } else {
        format!("{e:.*}", decimals(e, 100.0, 10.0))
    }
}

/// Seconds as a latency (`840 ms`, `1.3 s`).
pub fn seconds(s: f64) -> String {
    if !s.is_finite() {
        "?".into()
    } else if s.abs() < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s.abs() < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// A confidence level as words: 0.01 → `99 %`, 0.000042 → `99.996 %`. Enough decimals to
/// show the level's own first significant digit of alpha, so a tiny alpha never reads as
/// `100.0 %` (a bound at "100 %" confidence would be no bound at all).
pub fn level(alpha: f64) -> String {
    let c = (1.0 - alpha) * 100.0;
    if (c - c.round()).abs() < 1e-9 {
        return format!("{c:.0} %");
    }
    let a = alpha * 100.0;
    let places = if a > 0.0 && a < 1.0 {
        ((-a.log10()).floor() as usize + 1).min(6)
    } else {
        1
    };
    format!("{c:.places$} %")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(count(38107.0), "38 107");
        assert_eq!(count(812.0), "812");
        assert_eq!(count(1234567.0), "1 234 567");
        assert_eq!(pct(0.0231), "2.31 %");
        assert_eq!(pct(0.00042), "0.042 %");
        assert_eq!(times(2.43), "x2.4");
        assert_eq!(times(1.071), "x1.07");
        assert_eq!(evidence(412.3), "412");
        assert_eq!(seconds(0.84), "840 ms");
        assert_eq!(level(0.01), "99 %");
        assert_eq!(level(0.05 / 48.0), "99.9 %");
        assert_eq!(level(2.0 / (500.0 * 48.0)), "99.992 %");
        assert_eq!(level(0.025), "97.5 %");
    }
}
