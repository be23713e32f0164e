//! The process's own CPU, memory and file descriptors, under the names every Prometheus
//! client library uses (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! ...), read from the kernel at each scrape.

use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Reads the process's figures when Prometheus scrapes.
#[derive(Debug)]
pub(crate) struct ProcessCollector {
    /// When meshd started (its metrics were made), in seconds since the epoch.
    started: f64,
}

impl ProcessCollector {
    /// A collector for this process, started now.
    pub(crate) fn new() -> ProcessCollector {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        ProcessCollector { started }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) {
            let cpu = seconds(usage.user_time()) + seconds(usage.system_time());
            // Named with its `_total`, as the exposition keeps a counter's own name.
            let counter = ConstCounter::new(cpu);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                None,
                counter.metric_type(),
            )?)?;
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                status_kib(&status, "VmRSS:").map(|kib| kib * 1024.0),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                status_kib(&status, "VmSize:").map(|kib| kib * 1024.0),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                std::fs::read_dir("/proc/self/fd")
                    .ok()
                    .map(|fds| fds.count() as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                getrlimit(Resource::RLIMIT_NOFILE)
                    .ok()
                    .map(|(soft, _)| soft as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                Some(self.started),
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

fn seconds(time: nix::sys::time::TimeVal) -> f64 {
    let time: Duration = Duration::new(time.tv_sec().max(0) as u64, 0)
        + Duration::from_micros(time.tv_usec().max(0) as u64);
    time.as_secs_f64()
}

/// A `/proc/self/status` line's value in KiB (`VmRSS:    1234 kB`).
fn status_kib(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn the_process_reports_its_cpu_and_memory() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector::new()));
        // Some CPU to count.
        let spent = (0..2_000_000u64).fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b));
        assert_ne!(spent, 1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {text}"))
        };
        assert!(value("process_cpu_seconds_total_total") > 0.0);
        let rss = value("process_resident_memory_bytes");
        assert!(
            rss > 1024.0 * 1024.0,
            "a test binary holds more than 1 MiB: {rss}"
        );
        assert!(value("process_virtual_memory_bytes") >= rss);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
    }
}
