//! Tables and quantities as kubectl prints them.

use jiff::{SignedDuration, Timestamp};

/// Columns separated by three spaces and padded to the widest cell, headers in capitals.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = String>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            text.push_str(&format!("{cell:<w$}   "));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().map(|h| h.to_uppercase()));
    for row in rows {
        line(&mut row.iter().cloned());
    }
    out
}

/// A duration as kubectl's AGE column shows it: `45s`, `3m12s`, `25m`, `5h3m`, `3d4h`, `90d`
/// (`-30s` when negative). No spaces: a cell stays one field for `awk`.
pub fn age(d: SignedDuration) -> String {
    let secs = d.as_secs();
    if secs < 0 {
        return format!("-{}", age(-d));
    }
    let (m, h, day) = (secs / 60, secs / 3600, secs / 86400);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{m}m{}s", s % 60),
        s if s < 3 * 3600 => format!("{m}m"),
        s if s < 8 * 3600 => format!("{h}h{}m", m % 60),
        s if s < 48 * 3600 => format!("{h}h"),
        s if s < 8 * 86400 => format!("{day}d{}h", h % 24),
        _ => format!("{day}d"),
    }
}

/// How long ago `t` was, or `<none>`.
pub fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    t.map_or_else(|| "<none>".into(), |t| age(now.duration_since(t)))
}

/// How long until `t` (negative when overdue), or `<none>`.
pub fn until(t: Option<Timestamp>, now: Timestamp) -> String {
    t.map_or_else(|| "<none>".into(), |t| age(t.duration_since(now)))
}

/// Bytes in binary units with one decimal: `512B`, `1.5GiB`.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    // Display only: the precision lost converting to f64 is below what is printed.
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

/// `<none>` for an absent cell, as kubectl prints it.
pub fn or_none(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("<none>").to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tables_align_columns_like_kubectl() {
        let t = table(
            &["name", "ready"],
            &[
                vec!["a".into(), "True".into()],
                vec!["longer-name".into(), "False".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME          READY\na             True\nlonger-name   False\n"
        );
    }

    #[test]
    fn ages_read_as_kubectls() {
        let s = SignedDuration::from_secs;
        assert_eq!(age(s(45)), "45s");
        assert_eq!(age(s(192)), "3m12s");
        assert_eq!(age(s(25 * 60)), "25m");
        assert_eq!(age(s(5 * 3600 + 180)), "5h3m");
        assert_eq!(age(s(30 * 3600)), "30h");
        assert_eq!(age(s(3 * 86400 + 4 * 3600)), "3d4h");
        assert_eq!(age(s(90 * 86400)), "90d");
        assert_eq!(age(s(-30)), "-30s");
        assert_eq!(since(None, Timestamp::UNIX_EPOCH), "<none>");
        let t = Timestamp::UNIX_EPOCH;
        assert_eq!(until(Some(t + s(90)), t), "90s");
        assert_eq!(until(Some(t), t + s(5)), "-5s");
    }

    #[test]
    fn bytes_in_binary_units() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(512 << 20), "512.0MiB");
        assert_eq!(bytes(3 << 30), "3.0GiB");
    }
}
