//! The Debian package (issue 14 item 1), built with `cargo deb` from the tests' binary and
//! installed with `dpkg -i` into a Debian 12 root that `debootstrap` makes from the mirror this
//! machine's apt uses (root needed: the test fails, not skips, without it):
//!
//! - the unit passes `systemd-analyze verify` on the installed files, and its exposure score
//!   (`systemd-analyze security`) stays low;
//! - the system user `dustgate` exists, in group dialout; files and owners are as the README
//!   says; the service is enabled, not started;
//! - `dustgate check` runs there, as the service's user, on the installed config;
//! - an upgrade keeps an edited site.toml, the secrets and the store;
//! - removal keeps the config and the store; purge removes the config and keeps the store.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{find_program, repo_root, scratch_dir};

fn tool(name: &str, install: &str) -> PathBuf {
    let home_bin = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin").join(name))
        .filter(|p| p.exists());
    home_bin
        .or_else(|| find_program(name))
        .unwrap_or_else(|| panic!("this test needs {name}: {install} (scripts/test installs it)"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn in_root(root: &Path, args: &[&str]) -> Output {
    run(Command::new("chroot")
        .arg(root)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
}

/// The Debian archive this machine's apt uses (deb822 `URIs:` or a `deb` line), so the test
/// needs no address of its own.
fn debian_mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(body) = std::fs::read_to_string(&f) else {
            continue;
        };
        for line in body.lines().map(str::trim) {
            let uri = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.contains("://"))
            } else {
                None
            };
            if let Some(u) = uri
                && u.trim_end_matches('/').ends_with("/debian")
            {
                return u.to_string();
            }
        }
    }
    panic!("no Debian archive in /etc/apt/sources.list(.d): debootstrap needs one")
}

/// A Debian 12 root with systemd (for `systemd-analyze verify --root`), made once under
/// target/ and copied for each run so every run installs into a clean system.
fn debian_root(scratch: &Path) -> PathBuf {
    let cached = repo_root().join("target/debian-12-root");
    if !cached.join("usr/bin/systemctl").exists() {
        let debootstrap = tool("debootstrap", "apt-get install debootstrap");
        let partial = repo_root().join("target/debian-12-root.partial");
        let _ = std::fs::remove_dir_all(&partial);
        run(Command::new(debootstrap)
            .args(["--variant=minbase", "--include=systemd,procps", "bookworm"])
            .arg(&partial)
            .arg(debian_mirror()));
        std::fs::rename(&partial, &cached).expect("the new root in place");
    }
    let root = scratch.join("root");
    run(Command::new("cp").arg("-a").arg(&cached).arg(&root));
    root
}

fn build_deb(out_dir: &Path, version: &str) -> PathBuf {
    let cargo_deb = tool(
        "cargo-deb",
        "cargo install cargo-deb --version 3.8.0 --locked",
    );
    // The binary the tests built (debug profile): `--no-build` packages it as it is, so the
    // test needs no release build; a site's package is `cargo deb` (release).
    run(Command::new(cargo_deb)
        .current_dir(repo_root())
        .args(["deb", "--no-build", "--profile", "dev", "--fast"])
        .args(["--deb-version", version, "-o"])
        .arg(out_dir));
    let name = format!("dustgate_{version}_amd64.deb");
    let deb = out_dir.join(&name);
    assert!(deb.exists(), "cargo deb wrote {}", deb.display());
    deb
}

fn stat(root: &Path, path: &str) -> String {
    text(&in_root(root, &["stat", "-c", "%U:%G %a", path]))
        .trim()
        .to_string()
}

#[test]
fn the_package_installs_checks_upgrades_and_keeps_the_data() {
    assert!(
        std::env::consts::ARCH == "x86_64",
        "this test builds an amd64 package"
    );
    let scratch = scratch_dir("package-deb");
    let v1 = build_deb(&scratch, "0.1.0-1");
    let root = debian_root(&scratch);
    std::fs::copy(&v1, root.join("tmp/dustgate-1.deb")).expect("the package into the root");

    let install = text(&in_root(&root, &["dpkg", "-i", "/tmp/dustgate-1.deb"]));
    assert!(install.contains("systemctl start dustgate"), "{install}");

    // The user, the files and their owners.
    let user = text(&in_root(&root, &["getent", "passwd", "dustgate"]));
    assert!(
        user.trim_end()
            .ends_with(":/var/lib/dustgate:/usr/sbin/nologin"),
        "{user}"
    );
    let groups = text(&in_root(&root, &["id", "-nG", "dustgate"]));
    assert!(
        groups.split_whitespace().any(|g| g == "dialout"),
        "{groups}"
    );
    for (path, owner_mode) in [
        ("/usr/bin/dustgate", "root:root 755"),
        ("/etc/dustgate", "root:dustgate 750"),
        ("/etc/dustgate/site.toml", "root:dustgate 640"),
        ("/etc/dustgate/secrets.env", "root:root 600"),
        ("/var/lib/dustgate", "dustgate:dustgate 750"),
        ("/lib/systemd/system/dustgate.service", "root:root 644"),
    ] {
        assert_eq!(stat(&root, path), owner_mode, "{path}");
    }
    let conffiles = text(&in_root(
        &root,
        &["dpkg-query", "-W", "-f=${Conffiles}", "dustgate"],
    ));
    assert!(conffiles.contains("/etc/dustgate/site.toml"), "{conffiles}");
    // The link is absolute (it names the root's own file): read it, do not follow it.
    let wants = root.join("etc/systemd/system/multi-user.target.wants/dustgate.service");
    assert_eq!(
        std::fs::read_link(&wants).ok(),
        Some(PathBuf::from("/lib/systemd/system/dustgate.service")),
        "enabled for the next boot"
    );

    // The unit, on the installed files.
    let analyze = tool("systemd-analyze", "apt-get install systemd");
    let verify = run(Command::new(&analyze)
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("dustgate.service"));
    let verify_text = text(&verify);
    assert!(verify_text.trim().is_empty(), "verify said: {verify_text}");
    let security = text(&run(Command::new(&analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg("dustgate.service")));
    let score: f64 = security
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for dustgate.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{security}"));
    assert!(
        score <= 2.5,
        "exposure {score} (systemd's scale: 0 safest, 10 worst)"
    );

    // check, as the service's user, on the installed config.
    let check = text(&in_root(
        &root,
        &[
            "runuser",
            "-u",
            "dustgate",
            "--",
            "/usr/bin/dustgate",
            "check",
            "--config",
            "/etc/dustgate/site.toml",
        ],
    ));
    assert!(check.contains("plan: 2 bus(es), 6 device(s)"), "{check}");

    // An upgrade keeps the edited config, the secrets and the store.
    let site = root.join("etc/dustgate/site.toml");
    let mut edited = std::fs::read_to_string(&site).expect("site.toml");
    edited.push_str("\n# edited on site\n");
    std::fs::write(&site, &edited).expect("edit site.toml");
    std::fs::write(root.join("etc/dustgate/secrets.env"), "INFLUX_TOKEN=t0k\n").expect("secrets");
    std::fs::write(root.join("var/lib/dustgate/queue.redb"), b"store").expect("a store file");
    let v2 = build_deb(&scratch, "0.1.0-2");
    std::fs::copy(&v2, root.join("tmp/dustgate-2.deb")).expect("the new package into the root");
    in_root(&root, &["dpkg", "-i", "/tmp/dustgate-2.deb"]);
    let version = text(&in_root(
        &root,
        &["dpkg-query", "-W", "-f=${Version}", "dustgate"],
    ));
    assert_eq!(version.trim(), "0.1.0-2");
    assert_eq!(
        std::fs::read_to_string(&site).ok().as_deref(),
        Some(edited.as_str())
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/dustgate/secrets.env"))
            .ok()
            .as_deref(),
        Some("INFLUX_TOKEN=t0k\n")
    );
    assert!(root.join("var/lib/dustgate/queue.redb").exists());

    // Removal keeps config and store; purge keeps the store.
    in_root(&root, &["dpkg", "-r", "dustgate"]);
    assert!(!root.join("usr/bin/dustgate").exists());
    assert!(site.exists(), "a removed package's config stays");
    assert!(root.join("var/lib/dustgate/queue.redb").exists());
    let purge = text(&in_root(&root, &["dpkg", "--purge", "dustgate"]));
    assert!(!site.exists() && !root.join("etc/dustgate/secrets.env").exists());
    assert!(
        root.join("var/lib/dustgate/queue.redb").exists(),
        "purge keeps the store: {purge}"
    );
    eprintln!(
        "package: installed, unit verified (exposure {score}), check ran as dustgate, upgraded to 0.1.0-2 keeping config, secrets and store, removed and purged keeping the store"
    );
    let _ = std::fs::remove_dir_all(&root);
}
