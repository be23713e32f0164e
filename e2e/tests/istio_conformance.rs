//! Istio fidelity, measured: every Istio object in Istio's own samples and API reference
//! (read from the pinned modules, `fleetmesh_e2e::istio_corpus`) goes through meshd's
//! validation and through `istioctl validate` built from the same `istio.io/istio`
//! (`scripts/istio-build`). Each disagreement fails the test unless the allow-list
//! (`istio_conformance/allow-list.yaml`, beside this file) names it with its reason; an
//! allow-list entry that no longer matches fails it too, so the list only shrinks.
//! The agreement figure is printed and written to `target/tmp/istio-conformance.txt`.

use fleetmesh_api::fields::{NOT_SUPPORTED, unread};
use fleetmesh_e2e::istio_corpus::{Example, examples};
use fleetmesh_e2e::{istio_api_source, istio_build, istio_source};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const ALLOW_LIST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/istio_conformance/allow-list.yaml"
);

#[test]
fn meshd_accepts_what_istioctl_accepts_on_istios_own_examples() {
    let corpus = examples(&istio_source(), &istio_api_source());
    // The samples and the API reference hold well over 200 objects: far fewer means the
    // extraction broke, and an empty corpus would agree with anything.
    assert!(corpus.len() > 200, "only {} examples found", corpus.len());
    let istioctl = Istioctl::new(&istio_build());
    let verdicts = istioctl.verdicts(&corpus);
    let allow_list = AllowList::read(Path::new(ALLOW_LIST));

    let mut report = Report::default();
    for (example, theirs) in corpus.iter().zip(verdicts) {
        let ours = meshd_verdict(example);
        report.add(example, ours, theirs, &allow_list);
    }
    let summary = report.summary(corpus.len());
    let written = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("istio-conformance.txt");
    std::fs::write(&written, report.render(&summary)).unwrap();
    println!("{summary}\n(every object: {})", written.display());

    let unused = allow_list.unused(&report.allowed_by);
    assert!(
        report.disagreements.is_empty() && unused.is_empty(),
        "{summary}\n\ndisagreements not on the allow-list:\n{}\n\nallow-list entries that match no disagreement (remove them):\n{}",
        report.disagreements.join("\n"),
        unused.join("\n")
    );
}

#[test]
fn every_field_of_istios_crds_is_read_or_declared_not_supported() {
    let crds = istio_build().join("crd-all.gen.yaml");
    let text = std::fs::read_to_string(&crds).unwrap();
    let mut undeclared = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    let mut kinds = 0;
    for crd in serde_yaml_ng::Deserializer::from_str(&text) {
        use serde::Deserialize;
        let crd = serde_yaml_ng::Value::deserialize(crd).unwrap();
        let Some(kind_name) = crd["spec"]["names"]["kind"].as_str() else {
            continue;
        };
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        let Ok(kind) = fleetmesh_api::Kind::from_type(&format!("{group}/v1"), kind_name) else {
            continue;
        };
        kinds += 1;
        let version = &crd["spec"]["versions"][0];
        let spec_schema = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        for field in unread(kind, &mut every_field_of(spec_schema)) {
            match field.declared {
                Some(declared) => {
                    used.insert((declared.holder, declared.field));
                }
                None => undeclared.push(format!("  {kind_name}: {}", field.error)),
            }
        }
    }
    assert_eq!(
        kinds,
        9,
        "Istio's CRDs for meshd's nine Istio kinds, in {}",
        crds.display()
    );
    let stale: Vec<String> = NOT_SUPPORTED
        .iter()
        .filter(|n| !used.contains(&(n.holder, n.field)))
        .map(|n| format!("  {}.{}", n.holder, n.field))
        .collect();
    assert!(
        undeclared.is_empty() && stale.is_empty(),
        "fields of Istio's that meshd neither reads nor declares in fleetmesh_api::fields::NOT_SUPPORTED:\n{}\n\nNOT_SUPPORTED entries that are not Istio fields meshd lacks (remove them):\n{}",
        undeclared.join("\n"),
        stale.join("\n")
    );
}

/// An object with every field an OpenAPI schema describes (one item per list, one key
/// per map), leaves left empty: what the field walk of meshd's validation is run over.
fn every_field_of(schema: &serde_yaml_ng::Value) -> serde_yaml_ng::Value {
    use serde_yaml_ng::{Mapping, Value};
    if let Some(properties) = schema.get("properties").and_then(Value::as_mapping) {
        let mut object = Mapping::new();
        for (name, property) in properties {
            object.insert(name.clone(), every_field_of(property));
        }
        return Value::Mapping(object);
    }
    if let Some(items) = schema.get("items") {
        return Value::Sequence(vec![every_field_of(items)]);
    }
    if let Some(values) = schema
        .get("additionalProperties")
        .filter(|v| v.is_mapping())
    {
        let mut object = Mapping::new();
        object.insert("key".into(), every_field_of(values));
        return Value::Mapping(object);
    }
    Value::Null
}

/// What a validator said of one object: `Ok` or its errors.
type Verdict = Result<(), String>;

fn meshd_verdict(example: &Example) -> Verdict {
    let file = PathBuf::from(&example.origin);
    fleetmesh_api::load_documents(Some(&file), &example.yaml)
        .map(|_| ())
        .map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(|e| e.error.to_string()).collect();
            lines.join("\n           ")
        })
}

/// `istioctl validate`, run once per object; its verdicts are kept beside the binary (in
/// the cache `scripts/istio-build` keys by Istio's version), keyed by the object's digest,
/// since the same binary always answers the same input the same way.
struct Istioctl {
    binary: PathBuf,
    verdicts: PathBuf,
}

impl Istioctl {
    fn new(build: &Path) -> Self {
        let verdicts = build.join("validate-verdicts");
        std::fs::create_dir_all(&verdicts).unwrap();
        Istioctl {
            binary: build.join("bin/istioctl"),
            verdicts,
        }
    }

    /// The verdict on each example, in order (two at a time: the machine has two cores).
    fn verdicts(&self, corpus: &[Example]) -> Vec<Verdict> {
        let halves = corpus.split_at(corpus.len() / 2);
        std::thread::scope(|scope| {
            let first =
                scope.spawn(|| halves.0.iter().map(|e| self.verdict(e)).collect::<Vec<_>>());
            let mut second: Vec<Verdict> = halves.1.iter().map(|e| self.verdict(e)).collect();
            let mut all = first.join().unwrap();
            all.append(&mut second);
            all
        })
    }

    fn verdict(&self, example: &Example) -> Verdict {
        let digest = ring::digest::digest(&ring::digest::SHA256, example.yaml.as_bytes());
        let key: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let kept = self.verdicts.join(&key);
        if let Ok(text) = std::fs::read_to_string(&kept) {
            return parse_kept(&text);
        }
        let input = self.verdicts.join(format!("{key}.yaml"));
        std::fs::write(&input, &example.yaml).unwrap();
        let output = std::process::Command::new(&self.binary)
            .args(["validate", "--kubeconfig", "/dev/null", "-f"])
            .arg(&input)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.binary.display()));
        std::fs::remove_file(&input).unwrap();
        let said = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let verdict = if output.status.success() {
            Ok(())
        } else {
            Err(said.replace(&key, "object"))
        };
        let text = match &verdict {
            Ok(()) => "valid\n".to_string(),
            Err(errors) => format!("invalid\n{errors}"),
        };
        std::fs::write(&kept, text).unwrap();
        verdict
    }
}

fn parse_kept(text: &str) -> Verdict {
    match text.split_once('\n') {
        Some(("valid", _)) => Ok(()),
        Some((_, errors)) => Err(errors.to_string()),
        None => Err(text.to_string()),
    }
}

/// Disagreements known and reasoned: a kind meshd does not serve, or one feature of one
/// object (matched by kind, and by name and origin when given).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowEntry {
    kind: String,
    name: Option<String>,
    /// The start of the example's origin (a file, or a file and its example number).
    origin: Option<String>,
    reason: String,
}

struct AllowList(Vec<AllowEntry>);

impl AllowList {
    fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let entries: Vec<AllowEntry> =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for entry in &entries {
            assert!(
                !entry.reason.trim().is_empty(),
                "{}: the entry for {} has no reason",
                path.display(),
                entry.kind
            );
        }
        AllowList(entries)
    }

    /// The index of the first entry that covers this example.
    fn covering(&self, example: &Example) -> Option<usize> {
        self.0.iter().position(|entry| {
            entry.kind == example.kind
                && entry.name.as_ref().is_none_or(|n| *n == example.name)
                && entry
                    .origin
                    .as_ref()
                    .is_none_or(|o| example.origin.starts_with(o.as_str()))
        })
    }

    fn unused(&self, used: &BTreeMap<usize, usize>) -> Vec<String> {
        (0..self.0.len())
            .filter(|i| !used.contains_key(i))
            .map(|i| {
                let entry = &self.0[i];
                format!("  {} {}", entry.kind, entry.name.as_deref().unwrap_or("*"))
            })
            .collect()
    }
}

/// Whether every error meshd gave is a feature it declares not supported (a field of
/// `NOT_SUPPORTED`, a kind it does not serve, a mode or form its validation names as
/// not supported), each already with its reason.
fn declared_not_supported(errors: &str) -> bool {
    errors.lines().all(|error| error.contains("not supported"))
}

#[derive(Default)]
struct Report {
    agreed: usize,
    /// meshd refuses, for features it declares not supported.
    declared: usize,
    /// Allow-list entry → how many disagreements it covered.
    allowed_by: BTreeMap<usize, usize>,
    disagreements: Vec<String>,
    /// One line per object: verdicts and origin.
    lines: Vec<String>,
}

impl Report {
    fn add(&mut self, example: &Example, ours: Verdict, theirs: Verdict, allow: &AllowList) {
        let what = format!("{} {} ({})", example.kind, example.name, example.origin);
        let line = match (&ours, &theirs) {
            (Ok(()), Ok(())) | (Err(_), Err(_)) => {
                self.agreed += 1;
                let both = if ours.is_ok() {
                    "both accept"
                } else {
                    "both refuse"
                };
                format!("agree ({both}): {what}")
            }
            (Err(ours), Ok(())) if declared_not_supported(ours) => {
                self.declared += 1;
                format!("declared not supported: {what}\n    meshd: {ours}")
            }
            (Err(ours), Ok(())) => self.disagree(
                example,
                allow,
                format!("meshd refuses what istioctl accepts: {what}\n    meshd: {ours}"),
            ),
            (Ok(()), Err(theirs)) => self.disagree(
                example,
                allow,
                format!("meshd accepts what istioctl refuses: {what}\n    istioctl: {theirs}"),
            ),
        };
        self.lines.push(line);
    }

    fn disagree(&mut self, example: &Example, allow: &AllowList, text: String) -> String {
        match allow.covering(example) {
            Some(entry) => {
                *self.allowed_by.entry(entry).or_default() += 1;
                let reason = &allow.0[entry].reason;
                format!("allowed ({}): {text}", reason.trim())
            }
            None => {
                self.disagreements.push(text.clone());
                format!("DISAGREE: {text}")
            }
        }
    }

    fn summary(&self, total: usize) -> String {
        let allowed: usize = self.allowed_by.values().sum();
        format!(
            "Istio's samples and API reference: {total} objects; meshd and istioctl agree on {} ({:.1}%); meshd refuses {} for features it declares not supported; {allowed} differ as the allow-list explains; {} differ unexplained",
            self.agreed,
            100.0 * self.agreed as f64 / total as f64,
            self.declared,
            self.disagreements.len()
        )
    }

    fn render(&self, summary: &str) -> String {
        format!("{summary}\n\n{}\n", self.lines.join("\n"))
    }
}
