//! Deterministic generator of a realistic ~2 MB `/metrics` body (the fixture for
//! `benches/parse.rs` and `tests/expo_oracle.rs`, generated in code so it needs no network, no
//! Python and no large file in git).
//!
//! Shape, after research/crates.md §1.3: node_exporter-like families (CPU seconds per core and
//! mode, memory, filesystems, network, disks, vmstat, a Go GC summary, `node_uname_info`) plus
//! an HTTP service with six 12-bucket histograms and eight counter/gauge families labelled
//! `{method, route, status_code, instance, job}`. Six of the 20 routes are templates such as
//! `/api/v1/cart/{id}`; with `braces == false` they are written `/api/v1/cart/:id` instead, so
//! that prometheus-parse, which drops any sample whose label values contain `}`, sees input it
//! handles and the comparison is fair. Values mix integers, plain floats, Go-style `%e`
//! (`1.234560e+05`) and about 1 % `NaN`.

#![allow(dead_code)]

use std::fmt::Write as _;

/// `writeln!` into a `String`, which cannot fail.
macro_rules! emit {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

/// splitmix64: tiny, deterministic, good enough to vary values.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Go's `%e` formatting (`1.234560e+05`), which client_golang uses for many values.
pub fn go_e(v: f64) -> String {
    let s = format!("{v:.6e}");
    match s.split_once('e') {
        Some((mant, exp)) => {
            let exp: i32 = exp.parse().unwrap_or(0);
            let sign = if exp < 0 { '-' } else { '+' };
            format!("{mant}e{sign}{:02}", exp.abs())
        }
        None => s,
    }
}

/// A value written the way exporters do: integers, plain floats, `%e`, and ~1 % NaN.
fn value(rng: &mut Rng, scale: f64) -> String {
    let v = rng.unit() * scale;
    match rng.below(100) {
        0 => "NaN".to_string(),
        1..=40 => format!("{}", v.round() as u64),
        41..=70 => format!("{v}"),
        _ => go_e(v),
    }
}

const INSTANCE: &str = "ip-10-0-3-17.eu-west-1.compute.internal:9100";
const SVC_INSTANCE: &str = "checkout-7d9f8b6c5-x2k4p.prod.svc.cluster.local:8080";

fn node(out: &mut String, rng: &mut Rng) {
    let base = format!("instance=\"{INSTANCE}\",job=\"node\"");

    emit!(
        out,
        "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode."
    );
    emit!(out, "# TYPE node_cpu_seconds_total counter");
    let modes = [
        "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
    ];
    for cpu in 0..32 {
        for mode in modes {
            emit!(
                out,
                "node_cpu_seconds_total{{cpu=\"{cpu}\",mode=\"{mode}\",{base}}} {}",
                value(rng, 1e6)
            );
        }
    }

    let mem = [
        "Active",
        "Active_anon",
        "Active_file",
        "AnonHugePages",
        "AnonPages",
        "Bounce",
        "Buffers",
        "Cached",
        "CommitLimit",
        "Committed_AS",
        "DirectMap1G",
        "DirectMap2M",
        "DirectMap4k",
        "Dirty",
        "FileHugePages",
        "FilePmdMapped",
        "HardwareCorrupted",
        "HugePages_Free",
        "HugePages_Rsvd",
        "HugePages_Surp",
        "HugePages_Total",
        "Hugepagesize",
        "Hugetlb",
        "Inactive",
        "Inactive_anon",
        "Inactive_file",
        "KReclaimable",
        "KernelStack",
        "Mapped",
        "MemAvailable",
        "MemFree",
        "MemTotal",
        "Mlocked",
        "NFS_Unstable",
        "PageTables",
        "Percpu",
        "SReclaimable",
        "SUnreclaim",
        "ShmemHugePages",
        "Slab",
    ];
    for m in mem {
        emit!(
            out,
            "# HELP node_memory_{m}_bytes Memory information field {m}_bytes."
        );
        emit!(out, "# TYPE node_memory_{m}_bytes gauge");
        emit!(
            out,
            "node_memory_{m}_bytes{{{base}}} {}",
            go_e(rng.unit() * 6.4e10)
        );
    }

    let fs = [
        ("/dev/nvme0n1p1", "ext4", "/"),
        ("/dev/nvme0n1p15", "vfat", "/boot/efi"),
        ("/dev/nvme1n1", "xfs", "/var/lib/postgresql"),
        ("/dev/nvme2n1", "xfs", "/var/lib/kafka"),
        ("tmpfs", "tmpfs", "/run"),
        ("tmpfs", "tmpfs", "/run/lock"),
        ("tmpfs", "tmpfs", "/run/user/1000"),
        (
            "overlay",
            "overlay",
            "/var/lib/docker/overlay2/3f1c2a/merged",
        ),
    ];
    for fam in [
        "avail_bytes",
        "device_error",
        "files",
        "files_free",
        "free_bytes",
        "readonly",
        "size_bytes",
    ] {
        emit!(out, "# HELP node_filesystem_{fam} Filesystem {fam}.");
        emit!(out, "# TYPE node_filesystem_{fam} gauge");
        for (dev, fstype, mp) in fs {
            emit!(
                out,
                "node_filesystem_{fam}{{device=\"{dev}\",fstype=\"{fstype}\",mountpoint=\"{mp}\",{base}}} {}",
                value(rng, 1e12)
            );
        }
    }

    let netdevs = ["eth0", "eth1", "lo", "docker0", "veth1a2b3c", "cni0"];
    for fam in [
        "receive_bytes_total",
        "receive_compressed_total",
        "receive_drop_total",
        "receive_errs_total",
        "receive_fifo_total",
        "receive_frame_total",
        "receive_multicast_total",
        "receive_packets_total",
        "transmit_bytes_total",
        "transmit_carrier_total",
        "transmit_colls_total",
        "transmit_compressed_total",
        "transmit_drop_total",
        "transmit_errs_total",
        "transmit_fifo_total",
        "transmit_packets_total",
    ] {
        emit!(
            out,
            "# HELP node_network_{fam} Network device statistic {fam}."
        );
        emit!(out, "# TYPE node_network_{fam} counter");
        for dev in netdevs {
            emit!(
                out,
                "node_network_{fam}{{device=\"{dev}\",{base}}} {}",
                value(rng, 1e11)
            );
        }
    }

    let disks = ["nvme0n1", "nvme1n1", "nvme2n1", "dm-0"];
    for fam in [
        "discard_time_seconds_total",
        "discarded_sectors_total",
        "discards_completed_total",
        "discards_merged_total",
        "flush_requests_time_seconds_total",
        "flush_requests_total",
        "io_now",
        "io_time_seconds_total",
        "io_time_weighted_seconds_total",
        "read_bytes_total",
        "read_time_seconds_total",
        "reads_completed_total",
        "reads_merged_total",
        "write_time_seconds_total",
        "writes_completed_total",
        "writes_merged_total",
        "written_bytes_total",
    ] {
        emit!(out, "# HELP node_disk_{fam} Disk statistic {fam}.");
        emit!(out, "# TYPE node_disk_{fam} counter");
        for dev in disks {
            emit!(
                out,
                "node_disk_{fam}{{device=\"{dev}\",{base}}} {}",
                value(rng, 1e10)
            );
        }
    }

    for k in 0..30 {
        emit!(
            out,
            "# HELP node_vmstat_field{k} /proc/vmstat information field field{k}."
        );
        emit!(out, "# TYPE node_vmstat_field{k} untyped");
        emit!(out, "node_vmstat_field{k}{{{base}}} {}", value(rng, 1e9));
    }

    emit!(
        out,
        "# HELP go_gc_duration_seconds A summary of the pause duration of garbage collection cycles."
    );
    emit!(out, "# TYPE go_gc_duration_seconds summary");
    for q in ["0", "0.25", "0.5", "0.75", "1"] {
        emit!(
            out,
            "go_gc_duration_seconds{{quantile=\"{q}\",{base}}} {}",
            go_e(rng.unit() * 1e-3)
        );
    }
    emit!(
        out,
        "go_gc_duration_seconds_sum{{{base}}} {}",
        rng.unit() * 10.0
    );
    emit!(
        out,
        "go_gc_duration_seconds_count{{{base}}} {}",
        rng.below(100_000)
    );

    emit!(
        out,
        "# HELP node_uname_info Labeled system information as provided by the uname system call."
    );
    emit!(out, "# TYPE node_uname_info gauge");
    emit!(
        out,
        "node_uname_info{{domainname=\"(none)\",machine=\"x86_64\",nodename=\"ip-10-0-3-17\",release=\"6.8.0-1015-aws\",sysname=\"Linux\",version=\"#16-Ubuntu SMP Mon Aug 19 19:38:17 UTC 2024\",{base}}} 1"
    );
}

fn http(out: &mut String, rng: &mut Rng, braces: bool) {
    let templated = [
        "/api/v1/cart/{id}",
        "/api/v1/cart/{id}/items",
        "/api/v1/orders/{orderId}",
        "/api/v1/users/{userId}/addresses",
        "/api/v1/products/{sku}/reviews",
        "/api/v1/payments/{paymentId}/refund",
    ];
    let plain = [
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/cart",
        "/api/v1/orders",
        "/api/v1/products",
        "/api/v1/search",
        "/api/v1/login",
        "/api/v1/logout",
        "/api/v1/checkout",
        "/api/v1/recommendations",
        "/static/app.js",
        "/static/app.css",
    ];
    let mut routes: Vec<String> = Vec::new();
    for r in templated {
        routes.push(if braces {
            r.to_string()
        } else {
            // `{id}` → `:id`, the Express-style spelling of the same template.
            r.replace('{', ":").replace('}', "")
        });
    }
    routes.extend(plain.iter().map(|r| r.to_string()));
    let combos = [
        ("GET", "200"),
        ("GET", "404"),
        ("GET", "500"),
        ("POST", "201"),
        ("POST", "400"),
        ("DELETE", "204"),
    ];
    let base = format!("instance=\"{SVC_INSTANCE}\",job=\"checkout\"");

    let histograms = [
        (
            "http_request_duration_seconds",
            "Duration of HTTP requests.",
        ),
        ("http_request_size_bytes", "Size of HTTP request bodies."),
        ("http_response_size_bytes", "Size of HTTP response bodies."),
        ("http_server_handler_seconds", "Time spent in the handler."),
        (
            "db_query_duration_seconds",
            "Duration of database queries per route.",
        ),
        (
            "upstream_request_duration_seconds",
            "Duration of calls to upstream services.",
        ),
    ];
    let les = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ];
    for (name, help) in histograms {
        emit!(out, "# HELP {name} {help}");
        emit!(out, "# TYPE {name} histogram");
        for route in &routes {
            for (method, code) in combos {
                let labels =
                    format!("method=\"{method}\",route=\"{route}\",status_code=\"{code}\",{base}");
                let mut cumulative = 0u64;
                for le in les {
                    cumulative += rng.below(5_000);
                    emit!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
                }
                emit!(out, "{name}_sum{{{labels}}} {}", go_e(rng.unit() * 1e4));
                emit!(out, "{name}_count{{{labels}}} {cumulative}");
            }
        }
    }

    let families = [
        ("http_requests_total", "counter", "Total HTTP requests."),
        (
            "http_requests_in_flight",
            "gauge",
            "HTTP requests being served.",
        ),
        (
            "http_request_errors_total",
            "counter",
            "HTTP requests that failed.",
        ),
        (
            "http_rate_limited_total",
            "counter",
            "Requests answered with 429.",
        ),
        (
            "upstream_requests_total",
            "counter",
            "Calls to upstream services.",
        ),
        (
            "upstream_errors_total",
            "counter",
            "Failed calls to upstream services.",
        ),
        ("cache_hits_total", "counter", "Response cache hits."),
        ("cache_misses_total", "counter", "Response cache misses."),
    ];
    for (name, kind, help) in families {
        emit!(out, "# HELP {name} {help}");
        emit!(out, "# TYPE {name} {kind}");
        for route in &routes {
            for (method, code) in combos {
                emit!(
                    out,
                    "{name}{{method=\"{method}\",route=\"{route}\",status_code=\"{code}\",{base}}} {}",
                    value(rng, 1e7)
                );
            }
        }
    }

    for (name, v) in [
        ("db_pool_connections_open", 40.0),
        ("db_pool_connections_in_use", 37.0),
        ("db_pool_connections_idle", 3.0),
        ("db_pool_connections_max", 40.0),
        ("db_pool_wait_seconds_total", 1234.5),
        ("db_pool_wait_count_total", 99_812.0),
    ] {
        emit!(out, "# TYPE {name} gauge");
        emit!(out, "{name}{{pool=\"primary\",{base}}} {v}");
    }
}

/// The ~2 MB body; `braces` chooses `{id}` (realistic) or `:id` (prometheus-parse can read it).
pub fn realistic_body(braces: bool) -> String {
    let mut out = String::with_capacity(2_200_000);
    let mut rng = Rng::new(0x5EED_2026_1127);
    node(&mut out, &mut rng);
    http(&mut out, &mut rng, braces);
    out
}

/// Number of sample lines in a body (non-blank lines not starting with `#`), the count every
/// parser should return.
pub fn sample_lines(body: &str) -> usize {
    body.lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with('#')
        })
        .count()
}
