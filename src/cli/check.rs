//! `dustgate check`: every problem at once (exit 1), or the poll plan (exit 0).

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use dustgate::config::metrics::unit_of;
use dustgate::config::{Config, InfluxApi, Secret};
use dustgate::sources::modbus::planner;

pub fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let Some(cfg) = super::load_or_report(path) else {
        return Ok(ExitCode::FAILURE);
    };
    print!("{}", describe(&cfg));
    Ok(ExitCode::SUCCESS)
}

fn secret_state(s: &Secret) -> String {
    // Resolving reads a file only if it is a regular one, and boundedly (see `Secret`).
    let state = match s.resolve() {
        Ok(_) => "found".to_string(),
        Err(e) => format!("NOT USABLE here: {e}; `run` will refuse to start without it"),
    };
    format!("{} ({state})", s.describe())
}

/// Whether an SM4 key can be read here and is 16 bytes (never its value); `run` reads every
/// key before it starts anything.
fn sm4_key_state(k: &Secret) -> String {
    match dustgate::config::hj212::resolve_sm4_key(k) {
        Ok(_) => "found, 16 bytes".to_string(),
        Err(e) => format!("NOT USABLE here: {e}; `run` will refuse to start without it"),
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 {
        format!("{v} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The plan as text: site, output, buses, devices and the Modbus requests of each cycle.
pub fn describe(cfg: &Config) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{} is valid.\n", cfg.file.display());
    for w in &cfg.warnings {
        let _ = writeln!(o, "warning: {w}");
    }
    if !cfg.warnings.is_empty() {
        o.push('\n');
    }
    let s = &cfg.site;
    let _ = write!(o, "site       {}", s.id);
    if let Some(n) = &s.name {
        let _ = write!(o, " \"{n}\"");
    }
    let _ = write!(o, ", time zone {}", s.timezone_name);
    if !s.tags.is_empty() {
        let tags: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(o, ", tags {}", tags.join(" "));
    }
    o.push('\n');
    match &cfg.influx {
        Some(i) => {
            let api = match &i.api {
                InfluxApi::V1 {
                    database,
                    retention_policy,
                    username,
                    password,
                } => {
                    let mut t = format!("v1 /write database {database}");
                    if let Some(rp) = retention_policy {
                        let _ = write!(t, " rp {rp}");
                    }
                    if let Some(u) = username {
                        let _ = write!(t, ", user {u}");
                        if let Some(p) = password {
                            let _ = write!(t, ", password from {}", secret_state(p));
                        }
                    }
                    t
                }
                InfluxApi::V2 { org, bucket, token } => {
                    format!(
                        "v2 /api/v2/write org {org} bucket {bucket}, token from {}",
                        secret_state(token)
                    )
                }
            };
            let _ = writeln!(
                o,
                "output     InfluxDB {} ({api})",
                dustgate::redact::url(&i.url)
            );
            let _ = writeln!(
                o,
                "           batches of {} points or every {:?}, {}, retries up to {:?} apart",
                i.batch_size,
                i.flush_interval,
                if i.gzip { "gzip" } else { "uncompressed" },
                i.retry_max,
            );
        }
        None => {
            let _ = writeln!(
                o,
                "output     daily line-protocol files in {} (no [influx] section)",
                cfg.store.dir.join("series").display()
            );
        }
    }
    let _ = writeln!(
        o,
        "store      {}: durable queue up to {}, committed every {:?}; dead-letter files for rejected batches",
        cfg.store.dir.display(),
        human_bytes(cfg.store.max_size),
        cfg.store.commit_interval
    );
    if !cfg.packs.is_empty() {
        let packs: Vec<String> = cfg
            .packs
            .iter()
            .map(|p| format!("{} {} ({})", p.id, p.mark, p.title))
            .collect();
        let _ = writeln!(o, "standards  {}", packs.join("; "));
    }
    if let Some(b) = &s.background {
        let _ = writeln!(o, "background regional values from device {b}");
    }
    let _ = writeln!(o, "health     gateway points every {:?}", s.health_interval);

    let mut total_reads = 0usize;
    let mut reads_per_s = 0f64;
    let mut devices = 0usize;
    for bus in &cfg.buses {
        let _ = writeln!(
            o,
            "\nbus {}: {}, timeout {:?}, gap {:?}, {} device(s)",
            bus.name,
            bus.transport.describe(),
            bus.timeout,
            bus.request_gap,
            bus.devices.len()
        );
        for d in &bus.devices {
            devices += 1;
            let p = &d.profile;
            let _ = writeln!(
                o,
                "  device {} unit {} every {:?}: profile {} {}, {}",
                d.id,
                d.unit,
                d.interval,
                p.name,
                p.confidence.mark(),
                p.origin
            );
            if let Some(line) = &p.line {
                let _ = writeln!(o, "    factory line settings: {line}");
            }
            let spans: Vec<_> = p.registers.iter().map(|r| r.span()).collect();
            let plan = planner::plan(&spans, &d.limits);
            total_reads += plan.reads.len();
            reads_per_s += plan.reads.len() as f64 / d.interval.as_secs_f64();
            for (ri, r) in plan.reads.iter().enumerate() {
                let metrics: Vec<String> = p
                    .registers
                    .iter()
                    .zip(&plan.locations)
                    .filter(|(_, l)| l.read == ri)
                    .map(|(reg, _)| {
                        let unit = unit_of(&reg.metric);
                        if unit.is_empty() {
                            reg.metric.clone()
                        } else {
                            format!("{} [{unit}]", reg.metric)
                        }
                    })
                    .collect();
                let last = u32::from(r.start) + u32::from(r.count) - 1;
                let hex = if last > 255 {
                    format!(" = 0x{:04X}..0x{last:04X}", r.start)
                } else {
                    String::new()
                };
                let what = match (r.table.is_bits(), r.count) {
                    (true, 1) => "bit",
                    (true, _) => "bits",
                    (false, 1) => "register",
                    (false, _) => "registers",
                };
                let _ = writeln!(
                    o,
                    "    FC{:02} {} {}..{last}{hex} ({} {what}): {}",
                    r.table.read_function(),
                    r.table,
                    r.start,
                    r.count,
                    metrics.join(", ")
                );
            }
        }
    }
    for b in &cfg.brokers {
        let tls = match &b.tls {
            None => String::new(),
            Some(t) => format!(
                ", TLS trusting {}{}",
                t.ca_file
                    .as_ref()
                    .map_or("the system's CAs".to_string(), |c| c.display().to_string()),
                if t.client.is_some() {
                    ", client certificate"
                } else {
                    ""
                }
            ),
        };
        let auth = match (&b.username, &b.password) {
            (Some(u), Some(p)) => format!(", user {u}, password from {}", secret_state(p)),
            (Some(u), None) => format!(", user {u}"),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "\nbroker {}: {} as {} ({} session{tls}{auth})",
            b.name,
            dustgate::redact::url(&b.url),
            b.client_id,
            if b.clean_session {
                "clean"
            } else {
                "persistent"
            },
        );
        for s in &b.subscriptions {
            let device = match &s.device {
                dustgate::config::DeviceFrom::TopicLevel(n) => {
                    format!("device from topic level {n}")
                }
                dustgate::config::DeviceFrom::Pointer(p) => format!("device from {p}"),
                dustgate::config::DeviceFrom::Fixed(d) => format!("device {d}"),
            };
            let what = match &s.profile.kind {
                dustgate::config::json_profile::JsonKind::Readings(f) => f
                    .iter()
                    .map(|f| format!("{}←{}", f.metric, f.pointer))
                    .collect::<Vec<_>>()
                    .join(", "),
                dustgate::config::json_profile::JsonKind::Vehicle(_) => {
                    "vehicle events".to_string()
                }
                dustgate::config::json_profile::JsonKind::Detection { kind, .. } => match kind {
                    Some(k) => format!("{k} detections"),
                    None => "AI detections".to_string(),
                },
            };
            let _ = writeln!(
                o,
                "  subscribe {} qos {}, {device}, profile {} ({}): {what}",
                s.topic, s.qos, s.profile.name, s.profile.origin
            );
        }
        if let Some(dl) = &b.dead_letter_topic {
            let _ = writeln!(o, "  rejected messages republished to {dl}");
        }
    }
    for l in &cfg.hj212.listeners {
        let crc: Vec<&str> = l.crc.iter().map(|c| c.name()).collect();
        let unknown = match l.unknown {
            dustgate::config::UnknownMn::Reject => "unknown MNs rejected (counted)",
            dustgate::config::UnknownMn::Accept => "unknown MNs accepted (device = MN)",
        };
        let conns = match l.endpoint {
            dustgate::config::Hj212Endpoint::Tcp { .. } => {
                format!("up to {} connections, ", l.max_connections)
            }
            dustgate::config::Hj212Endpoint::Serial { .. } => String::new(),
        };
        let _ = writeln!(
            o,
            "\nhj212 listener {}: {}, crc {}, {unknown}, map {}",
            l.name,
            l.endpoint.describe(),
            crc.join(" "),
            l.factors.name
        );
        let _ = writeln!(
            o,
            "  {conns}idle timeout {}, at most {} frames/s per station, buffer {}; clock drift over {} alerts{}; a data flag other than N held {} alerts",
            human_duration(l.idle_timeout),
            l.max_frame_rate,
            human_bytes(l.max_buffer as u64),
            human_duration(l.max_drift),
            if l.set_time {
                " and the monitor's clock is set (CN=1012)"
            } else {
                ""
            },
            human_duration(l.flag_alert_after)
        );
        for st in &l.stations {
            let password = st
                .password
                .as_ref()
                .map_or("no password check".to_string(), |p| {
                    format!("password from {}", secret_state(p))
                });
            let sm4 = st.sm4_key.as_ref().map_or("no SM4 key".to_string(), |k| {
                format!("SM4 key from {} ({})", k.describe(), sm4_key_state(k))
            });
            let kind = st
                .kind
                .map_or("kind from its codes".to_string(), |k| k.name().to_string());
            let _ = writeln!(
                o,
                "  station {} → device {}, site {}, map {}, {kind}; {password}; {sm4}",
                st.mn, st.device, st.site, st.factors.name
            );
        }
    }
    for u in &cfg.hj212.upstreams {
        describe_upstream(&mut o, cfg, u);
    }
    let maps = cfg.hj212.factor_maps();
    if !maps.is_empty() {
        let _ = writeln!(o, "\nHJ 212 factor maps:");
        for m in maps {
            let _ = writeln!(
                o,
                "  {} {}: {} codes, {} ({})",
                m.name,
                m.confidence.mark(),
                m.len(),
                m.origin,
                m.description
            );
        }
    }
    if !cfg.rules.is_empty() {
        let _ = writeln!(o, "\nrules in force ({}):", cfg.rules.len());
        let today = cfg.site.timezone.to_datetime(jiff::Timestamp::now()).date();
        for r in &cfg.rules {
            let note = if r.in_force(today) {
                ""
            } else {
                " [not in force today]"
            };
            let _ = writeln!(o, "  {}{note}", describe_rule(r));
        }
    }
    if !cfg.rule_patches.is_empty() {
        let _ = writeln!(o, "\nsite patches of pack rules:");
        for p in &cfg.rule_patches {
            for line in p.lines() {
                let _ = writeln!(o, "  {}: {line}", p.rule);
            }
        }
    }
    let a = &cfg.alerts;
    if a.mqtt.is_some() || !a.webhooks.is_empty() {
        let _ = writeln!(o, "\nalerts ({:?}):", a.locale);
        if let Some(m) = &a.mqtt {
            let _ = writeln!(
                o,
                "  MQTT {} on broker {}, from {}",
                m.topic,
                m.broker,
                m.min_severity.name()
            );
        }
        for w in &a.webhooks {
            let _ = writeln!(
                o,
                "  webhook {} ({}), URL from {}{}, from {}",
                w.name,
                w.format.name(),
                secret_state(&w.url),
                w.secret.as_ref().map_or(String::new(), |s| format!(
                    ", signed with {}",
                    secret_state(s)
                )),
                w.min_severity.name()
            );
        }
    }
    if let Some(c) = &cfg.compliance {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        let _ = writeln!(
            o,
            "\nsix 100% ([compliance]): an exit is washed with {} of washing within {} before it (pump on, or flow over {} L/min); wet work: a {} gap without spray during activity is a violation; a detection open {} is a violation",
            human_duration(c.wash_min),
            human_duration(c.wash_lookback),
            c.wash_flow_min,
            human_duration(c.wet_gap),
            human_duration(c.max_open)
        );
        if !c.activity.is_empty() {
            let periods: Vec<String> = c
                .activity
                .iter()
                .map(|s| format!("{}–{}", hm(s.start), hm(s.end)))
                .collect();
            let _ = writeln!(o, "  activity hours: {}", periods.join(", "));
        }
        if let Some((p, d)) = c.paved {
            let _ = writeln!(o, "  roads paved: {p}% (declared {d})");
        }
    }
    if !cfg.actuators.is_empty() {
        let _ = writeln!(o, "\nactuators ({}):", cfg.actuators.len());
        for a in &cfg.actuators {
            let coils: Vec<String> = a
                .coils
                .iter()
                .map(|(m, addr)| format!("{m}@{addr}"))
                .collect();
            let rules: Vec<&str> = cfg
                .rules
                .iter()
                .filter(|r| r.actuate.as_deref() == Some(a.id.as_str()))
                .map(|r| r.id.as_str())
                .collect();
            let _ = writeln!(
                o,
                "  {}: {} coil(s) {}; min_on {}, min_off {}, max_on {}, daily budget {}; safe state {}; switched by {}",
                a.id,
                a.device,
                coils.join(", "),
                human_duration(a.min_on),
                human_duration(a.min_off),
                a.max_on.map_or("-".into(), human_duration),
                a.daily_budget.map_or("-".into(), human_duration),
                if a.safe_on { "on" } else { "off" },
                if rules.is_empty() {
                    "no rule (manual only)".to_string()
                } else {
                    format!("rules {}", rules.join(", "))
                }
            );
        }
        let c = &cfg.control;
        if let Some((b, t)) = &c.mqtt {
            let _ = writeln!(o, "  manual override: MQTT {t} on broker {b}");
        }
        match &c.token {
            Some(t) => {
                let _ = writeln!(
                    o,
                    "  manual override: POST http://{}/api/actuators/{{id}} with the bearer token from {}",
                    cfg.http.listen,
                    secret_state(t)
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "  manual override over HTTP: off (no [control].token_env)"
                );
            }
        }
        let _ = writeln!(
            o,
            "  an override lasts at most {}",
            human_duration(c.max_for)
        );
    }
    let _ = writeln!(
        o,
        "\nplan: {} bus(es), {} device(s), {} request(s) per cycle, {:.2} requests/s; {} broker(s); {} HJ 212 listener(s), {} station(s); {} HJ 212 platform(s)",
        cfg.buses.len(),
        devices,
        total_reads,
        reads_per_s,
        cfg.brokers.len(),
        cfg.hj212.listeners.len(),
        cfg.hj212
            .listeners
            .iter()
            .map(|l| l.stations.len())
            .sum::<usize>(),
        cfg.hj212.upstreams.len()
    );
    o
}

/// The metrics a device reports, as far as the config says: Modbus and fixed MQTT devices
/// from their profiles; `None` for HJ 212 stations (their codes) and ids known at run time.
fn device_metrics(cfg: &Config) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |id: &str, metrics: Vec<String>| {
        let mut m: Vec<String> = Vec::new();
        for x in metrics {
            if !m.contains(&x) {
                m.push(x);
            }
        }
        out.push((id.to_string(), m));
    };
    for d in cfg.buses.iter().flat_map(|b| &b.devices) {
        add(
            &d.id,
            d.profile
                .registers
                .iter()
                .filter(|r| !r.writable)
                .map(|r| r.metric.clone())
                .collect(),
        );
    }
    for s in cfg.brokers.iter().flat_map(|b| &b.subscriptions) {
        if let (
            dustgate::config::DeviceFrom::Fixed(id),
            dustgate::config::json_profile::JsonKind::Readings(f),
        ) = (&s.device, &s.profile.kind)
        {
            add(id, f.iter().map(|f| f.metric.clone()).collect());
        }
    }
    out
}

/// One platform's plan: where, who, what goes up how often, which codes and units.
fn describe_upstream(o: &mut String, cfg: &Config, u: &dustgate::config::upstream::Hj212Upstream) {
    let _ = writeln!(
        o,
        "\nhj212 platform {}: {} (HJ 212-{}), ST {}, MN {}, password from {}",
        u.name,
        u.address,
        u.version.name(),
        u.st,
        u.mn,
        secret_state(&u.password)
    );
    let mut what = Vec::new();
    if let Some(r) = u.realtime {
        what.push(format!("real-time 2011 every {}", human_duration(r)));
    }
    if let Some(m) = u.minute {
        what.push(format!("minute 2051 every {m}m"));
    }
    if u.hourly {
        what.push("hourly 2061".to_string());
    }
    if u.daily {
        what.push("daily 2031".to_string());
    }
    let _ = writeln!(
        o,
        "  sends {}; 2081 on each connect; times in {} without offset",
        what.join(", "),
        cfg.site.timezone_name
    );
    let _ = writeln!(
        o,
        "  {}; missed data kept {} for resending (live first), periods flagged below {:.0}% of their readings, late readings waited for {}",
        if u.ack {
            format!(
                "asks for 9014 answers: resent after {} up to {} time(s), then reconnects; {} frame(s) in flight",
                human_duration(u.timeout),
                u.retries,
                u.window
            )
        } else {
            "no answers asked (a frame written to the socket counts as delivered)".to_string()
        },
        human_duration(u.keep),
        u.min_coverage * 100.0,
        human_duration(u.grace)
    );
    if let Some(k) = &u.sm4_key {
        let state = sm4_key_state(k);
        let length = match u.sm4_length {
            dustgate::config::upstream::Sm4Length::Plaintext => "the plaintext's",
            dustgate::config::upstream::Sm4Length::Transmitted => "the sent text's",
        };
        let _ = writeln!(
            o,
            "  data frames (CN 2000-2999) SM4-encrypted with the key from {} ({state}); length and CRC {length}",
            k.describe()
        );
    }
    if let Some(h) = u.heartbeat {
        let _ = writeln!(
            o,
            "  heartbeat 9015 after {} without a frame",
            human_duration(h)
        );
    }
    let _ = writeln!(
        o,
        "  backlog {}; the platform may change the intervals and the password (CN 1062/1064/1072/2011/2012), kept there",
        cfg.store
            .dir
            .join("hj212-upstream")
            .join(format!("{}.redb", u.name))
            .display()
    );
    let devices = device_metrics(cfg);
    let mut any = false;
    for (id, metrics) in devices.iter().filter(|(id, _)| u.takes(id)) {
        any = true;
        let mut sent = Vec::new();
        let mut left = Vec::new();
        for m in metrics {
            match u.factors.code_for(m) {
                Some(f) => {
                    let unit = match unit_of(m) {
                        "" => "no unit",
                        u => u,
                    };
                    let wire = if f.factor == 1.0 {
                        unit.to_string()
                    } else {
                        format!("{unit} ÷ {}", f.factor)
                    };
                    sent.push(format!("{m}→{} ({wire}, {} dp)", f.code, f.decimals));
                }
                None => left.push(m.as_str()),
            }
        }
        let _ = write!(
            o,
            "  device {id}: {}",
            if sent.is_empty() {
                "nothing the map has a code for".to_string()
            } else {
                sent.join(", ")
            }
        );
        if !left.is_empty() {
            let _ = write!(
                o,
                "; not sent (no code in {}): {}",
                u.factors.name,
                left.join(", ")
            );
        }
        o.push('\n');
    }
    let stations: Vec<&str> = cfg
        .hj212
        .listeners
        .iter()
        .flat_map(|l| &l.stations)
        .map(|s| s.device.as_str())
        .filter(|d| u.takes(d))
        .collect();
    if !stations.is_empty() {
        any = true;
        let _ = writeln!(
            o,
            "  HJ 212 station(s) {}: every metric they report that {} has a code for",
            stations.join(", "),
            u.factors.name
        );
    }
    if !any {
        let _ = writeln!(
            o,
            "  devices {}: none configured yet (ids known at run time are matched then)",
            if u.devices.is_empty() {
                "*".to_string()
            } else {
                u.devices.join(", ")
            }
        );
    }
}

/// One line per rule: what is judged, the limit, and where it comes from.
fn describe_rule(r: &dustgate::config::rules::RuleConfig) -> String {
    use dustgate::config::rules::{Aggregate, Condition};
    let unit = unit_of(&r.metric);
    let u = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    let what = match (r.window, r.aggregate) {
        (Some(w), agg) if agg != Aggregate::Each => {
            format!("{} {} {}", r.metric, human_duration(w), agg.name())
        }
        _ => format!("{} each reading", r.metric),
    };
    let cond = match r.condition {
        Condition::Above(x) => format!("> {x}{u}"),
        Condition::Below(x) => format!("< {x}{u}"),
        Condition::Outside(lo, hi) => format!("outside {lo}–{hi}{u}"),
    };
    let mut extra = Vec::new();
    if let Some(c) = r.clear {
        extra.push(format!("clears at {c}"));
    }
    if !r.hold.is_zero() {
        extra.push(format!("for {}", human_duration(r.hold)));
    }
    if let Some(b) = &r.background {
        extra.push(format!(
            "minus {}/{}{}",
            b.device,
            b.metric,
            b.cap.map_or(String::new(), |c| format!(" (at most {c})"))
        ));
    }
    if let Some(w) = &r.when {
        extra.push(format!(
            "{:02}:{:02}–{:02}:{:02}",
            w.start / 60,
            w.start % 60,
            w.end / 60,
            w.end % 60
        ));
    }
    if let Some(m) = r.max_per_day {
        extra.push(format!("at most {m} a day"));
    }
    if let Some(a) = &r.actuate {
        extra.push(format!("switches {a}"));
    }
    if let (Some(f), _) | (None, Some(f)) = (r.effective_from, r.effective_until) {
        let _ = f;
        extra.push(format!(
            "in force {}–{}",
            r.effective_from.map_or(String::new(), |d| d.to_string()),
            r.effective_until.map_or(String::new(), |d| d.to_string())
        ));
    }
    if !r.devices.is_empty() {
        extra.push(format!("devices {}", r.devices.join(" ")));
    }
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(" ({})", extra.join(", "))
    };
    let p = &r.provenance;
    let src = if p.pack == "site" {
        "site rule".to_string()
    } else {
        format!(
            "{} {}",
            p.standard.clone().unwrap_or_else(|| p.pack.clone()),
            p.mark.clone().unwrap_or_default()
        )
    };
    format!(
        "{:<24} {what} {cond}{extra}, {} — {src}",
        r.id,
        r.severity.name()
    )
}

fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86_400) && s > 0 {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) && s > 0 {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) && s > 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
