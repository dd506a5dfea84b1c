//! The fleet role: its playbook passes ansible-playbook's syntax check, and its template,
//! rendered for a sample host by the real ansible-core, is a config receptord accepts.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn ansible_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/ansible")
}

#[test]
fn the_role_passes_the_syntax_check() {
    let out = Command::new(venv_bin().join("ansible-playbook"))
        .current_dir(ansible_dir())
        .env("PATH", path_with_venv())
        .args(["--syntax-check", "-i", "inventory.ini", "site.yml"])
        .output()
        .expect("ansible-playbook");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn the_rendered_config_is_accepted_by_receptord() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).expect("mkdir");
    let cert = |args: &[&str]| {
        let out = Command::new(RECEPTOR).current_dir(&tls).args(args).output().expect("receptor cert");
        assert!(out.status.success(), "{}", stderr(&out));
    };
    cert(&["cert", "init"]);
    cert(&["cert", "issue", "--node-id", "exec1", "--out-cert", "node.crt", "--out-key", "node.key"]);
    let rendered = dir.path().join("receptor.toml");
    let playbook = dir.path().join("render.yml");
    let me =
        nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.name).unwrap_or_default();
    let group = nix::unistd::Group::from_gid(nix::unistd::getgid())
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_default();
    std::fs::write(
        &playbook,
        format!(
            "- hosts: exec1.example.com\n  connection: local\n  gather_facts: false\n  tasks:\n    \
             - ansible.builtin.include_role:\n        name: receptord\n        tasks_from: render.yml\n      \
             vars:\n        receptord_config_path: \"{}\"\n        receptord_binary: \"{RECEPTORD}\"\n        \
             receptord_config_owner: \"{me}\"\n        receptord_config_group: \"{group}\"\n        receptord_reload: false\n",
            rendered.display()
        ),
    )
    .expect("playbook");
    let out = Command::new(venv_bin().join("ansible-playbook"))
        .env("PATH", path_with_venv())
        .env("ANSIBLE_ROLES_PATH", ansible_dir().join("roles"))
        .arg("-i")
        .arg(ansible_dir().join("inventory.ini"))
        .arg(&playbook)
        .arg("-e")
        .arg(format!("ansible_python_interpreter={}", venv_bin().join("python3").display()))
        .arg("-e")
        .arg(format!(
            "receptord_tls_dir={} receptord_data_dir={}",
            tls.display(),
            dir.path().join("data").display()
        ))
        .output()
        .expect("ansible-playbook");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = std::fs::read_to_string(&rendered).expect("rendered");
    assert!(text.contains("id = \"exec1\"") && text.contains("receptors://hop1.example.com:8899"), "{text}");
    let out =
        Command::new(RECEPTORD).arg("--check-config").arg("-c").arg(&rendered).output().expect("receptord");
    assert!(out.status.success(), "{}\n{text}", stderr(&out));
}
