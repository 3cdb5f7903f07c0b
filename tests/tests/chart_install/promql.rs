//! The metric names a PromQL expression selects, so the chart's alerts and dashboard can be
//! checked against the names the binaries register. Not a PromQL parser: it removes what
//! cannot be a metric name (string literals, label matchers in `{}`, ranges in `[]`, label
//! lists after `by`/`without`/`on`/`ignoring`/`group_left`/`group_right`, numbers,
//! durations) and keeps every identifier that is neither a keyword nor called as a
//! function. Its own tests below pin that down.

/// Words of the language that are not metric names (aggregations may come before their
/// `by`/`without` list rather than before a parenthesis).
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Every metric name `expr` selects, sorted, without duplicates.
pub fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    // The identifier just read, when it may introduce a label list.
    let mut after_label_keyword = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i = skip_string(&chars, i);
                after_label_keyword = false;
            }
            '{' => {
                i = skip_until(&chars, i, '}');
                after_label_keyword = false;
            }
            '[' => {
                i = skip_until(&chars, i, ']');
                after_label_keyword = false;
            }
            '(' if after_label_keyword => {
                i = skip_until(&chars, i, ')');
                after_label_keyword = false;
            }
            c if c.is_ascii_digit() || (c == '.' && next_is_digit(&chars, i)) => {
                // A number or a duration (5m, 1e3, 0x1f): one run of word characters.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                after_label_keyword = false;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let called = j < chars.len() && chars[j] == '(';
                let lower = word.to_ascii_lowercase();
                after_label_keyword = LABEL_LISTS.contains(&lower.as_str());
                if !called && !KEYWORDS.contains(&lower.as_str()) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names.sort();
    names.dedup();
    names
}

fn next_is_digit(chars: &[char], i: usize) -> bool {
    chars.get(i + 1).is_some_and(char::is_ascii_digit)
}

/// The index after the string literal that starts at `i`.
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        if chars[j] == '\\' && quote != '`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// The index after the `close` that ends the group starting at `i`, skipping strings.
fn skip_until(chars: &[char], i: usize, close: char) -> usize {
    let mut j = i + 1;
    while j < chars.len() && chars[j] != close {
        if matches!(chars[j], '"' | '\'' | '`') {
            j = skip_string(chars, j);
        } else {
            j += 1;
        }
    }
    j + 1
}

#[test]
fn finds_the_selected_metrics_and_nothing_else() {
    assert_eq!(
        metric_names(
            r#"(time() - max by (namespace, name) (a_seconds{job="x", name=~"b.*"}))
                 > 3 * max without (pod) (b_ms offset 5m) / 1e3"#
        ),
        ["a_seconds", "b_ms"]
    );
    assert_eq!(
        metric_names(
            r#"sum by (le) (rate(h_bucket{result!="ok"}[5m])) / on (pod) group_left (pool) c unless absent(d{x='}'})"#
        ),
        ["c", "d", "h_bucket"]
    );
    assert_eq!(metric_names("up == 0 and bool 1"), ["up"]);
    assert_eq!(
        metric_names("histogram_quantile(0.99, x:rate5m)"),
        ["x:rate5m"]
    );
}
