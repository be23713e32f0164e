//! Istio's Grafana dashboards as data: read from the pinned `istio.io/istio` module (see
//! `scripts/istio-source`; nothing is copied into this repository), their PromQL
//! queries reduced to the series they select, and those matched against a Prometheus
//! exposition.

use std::collections::BTreeSet;

/// Every PromQL expression of a generated dashboard (`manifests/addons/dashboards/*.gen.json`).
pub fn queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dashboard];
    while let Some(value) = pending.pop() {
        match value {
            serde_json::Value::Object(fields) => {
                if let Some(expr) = fields.get("expr").and_then(|e| e.as_str()) {
                    found.push(expr.to_string());
                }
                pending.extend(fields.values());
            }
            serde_json::Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    found.reverse();
    found
}

/// A series selector of a query: the metric's name and its equality matchers
/// (`name{label="value"}`). Regex matchers (`pod=~"istiod-.*"`) select the scrape
/// target's labels, which Prometheus adds, so they are left out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Selector {
    /// The metric's name as the query writes it (`pilot_xds_push_time_bucket`).
    pub name: String,
    /// `label="value"` matchers.
    pub labels: Vec<(String, String)>,
}

/// PromQL words before a parenthesised list of label names.
const GROUPING: [&str; 4] = ["by", "without", "on", "ignoring"];

/// PromQL words that are no metric names: aggregations (`sum by (pod) (...)` puts a
/// grouping between the word and its parenthesis) and binary operators' modifiers.
/// Functions are followed by `(`, and recognised without a list.
const KEYWORDS: [&str; 20] = [
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
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "vector",
];

/// The series selectors of one PromQL expression.
pub fn selectors(expr: &str) -> BTreeSet<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '[' {
            // A range (`[$__rate_interval]`): no names inside.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '"' {
            i = skip_string(&chars, i);
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let mut next = i;
        while next < chars.len() && chars[next] == ' ' {
            next += 1;
        }
        let grouping = GROUPING.contains(&word.as_str());
        if chars.get(next) == Some(&'(') {
            if grouping {
                // `by (pod)`: label names.
                while next < chars.len() && chars[next] != ')' {
                    next += 1;
                }
                i = next + 1;
            }
            continue;
        }
        if grouping || KEYWORDS.contains(&word.as_str()) {
            continue;
        }
        let mut labels = Vec::new();
        if chars.get(next) == Some(&'{') {
            let end = (next..chars.len())
                .find(|&j| chars[j] == '}')
                .unwrap_or(chars.len());
            let inside: String = chars[next + 1..end].iter().collect();
            labels = equality_matchers(&inside);
            i = end + 1;
        }
        found.insert(Selector { name: word, labels });
    }
    found
}

fn skip_string(chars: &[char], open: usize) -> usize {
    let mut i = open + 1;
    while i < chars.len() && chars[i] != '"' {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// `a="x",b=~"y"` → `[(a, x)]`.
fn equality_matchers(inside: &str) -> Vec<(String, String)> {
    inside
        .split(',')
        .filter_map(|matcher| {
            let (label, value) = matcher.split_once('=')?;
            let value = value.strip_prefix('"')?.strip_suffix('"')?;
            Some((label.trim().to_string(), value.to_string()))
        })
        .collect()
}

/// Whether `exposition` (Prometheus text) has a sample `selector` selects.
pub fn selects(exposition: &str, selector: &Selector) -> bool {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .any(|line| {
            let Some(rest) = line.strip_prefix(selector.name.as_str()) else {
                return false;
            };
            if !rest.starts_with(['{', ' ']) {
                return false;
            }
            selector
                .labels
                .iter()
                .all(|(label, value)| rest.contains(&format!("{label}=\"{value}\"")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        selectors(expr).into_iter().map(|s| s.name).collect()
    }

    #[test]
    fn queries_reduce_to_the_series_they_select() {
        assert_eq!(
            names("sum by (type,event) (rate(pilot_k8s_reg_events[$__rate_interval]))"),
            ["pilot_k8s_reg_events"]
        );
        assert_eq!(
            names("sum(rate(pilot_xds_push_time_bucket{}[$__rate_interval])) by (le)"),
            ["pilot_xds_push_time_bucket"]
        );
        assert_eq!(
            selectors("sum by (tag) (istio_build{component=\"pilot\"})")
                .into_iter()
                .collect::<Vec<_>>(),
            [Selector {
                name: "istio_build".into(),
                labels: vec![("component".into(), "pilot".into())]
            }]
        );
        let selected = selectors(
            "sum by (pod) (container_memory_working_set_bytes{container=\"discovery\",pod=~\"istiod-.*\"}) / on (pod) up",
        );
        let labels: Vec<_> = selected.iter().map(|s| s.labels.clone()).collect();
        assert_eq!(
            names("a_b{x=\"(y)\"} or vector(0)"),
            ["a_b"],
            "no names inside strings or after or"
        );
        assert_eq!(
            labels,
            [
                vec![("container".to_string(), "discovery".to_string())],
                vec![]
            ]
        );
    }

    #[test]
    fn a_selector_matches_only_samples_with_its_labels() {
        let exposition =
            "# TYPE istio_build gauge\nistio_build{component=\"pilot\",tag=\"1\"} 1\npilot_xds 3\n";
        let build = |component: &str| Selector {
            name: "istio_build".into(),
            labels: vec![("component".into(), component.into())],
        };
        assert!(selects(exposition, &build("pilot")));
        assert!(!selects(exposition, &build("proxy")));
        let xds = Selector {
            name: "pilot_xds".into(),
            labels: vec![],
        };
        assert!(selects(exposition, &xds));
        let prefix = Selector {
            name: "pilot".into(),
            labels: vec![],
        };
        assert!(!selects(exposition, &prefix), "a name is matched whole");
    }
}
