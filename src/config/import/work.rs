//! The control service and work in `receptor config import`: `control-service`,
//! `work-command` and `work-signing` (what a Go node serves and runs, kept apart from the
//! backends so each part's rules stay in one place).

use std::path::Path;

use super::{
    AnsibleRunner, Command, ImportError, Translation, go_duration, octal_mode, valid_tcp_listen, yaml,
};

impl Translation {
    pub(super) fn control_service(&mut self, e: &mut yaml::Entry) -> Result<(), ImportError> {
        let first = !std::mem::replace(&mut self.control.present, true);
        let service_at = e.at("service");
        let service = e.str("service")?.unwrap_or_else(|| "control".into());
        if service != "control" {
            self.left(service_at, "receptord serves its control service to the mesh as \"control\" only");
        }
        let tls_at = e.at("tls");
        if let Some(t) = e.str("tls")?.filter(|s| !s.is_empty()) {
            if service != "control" {
                self.left(tls_at, "receptord serves its control service to the mesh as \"control\" only");
            } else if self.control.mesh_tls.is_some() {
                self.left(tls_at, "receptord serves one mesh control service");
            } else {
                self.control.mesh_tls = Some((t, tls_at));
            }
        }
        let file_at = e.at("filename");
        if let Some(file) = e.str("filename")? {
            if self.control.socket.is_some() {
                self.left(file_at, "receptord has one control socket");
            } else {
                self.control.socket = Some(file);
            }
        }
        let perm_at = e.at("permissions");
        let mode = match e.str("permissions")? {
            Some(p) => Some(octal_mode(&p).ok_or_else(|| ImportError::Invalid {
                path: perm_at,
                reason: "must be octal file permissions".into(),
            })?),
            None => first.then(|| "0600".to_owned()), // Go's default
        };
        if self.control.mode.is_none() {
            self.control.mode = mode;
        }
        let listen_at = e.at("tcplisten");
        let listen = e.str("tcplisten")?.filter(|s| !s.is_empty());
        let tcptls_at = e.at("tcptls");
        let tcptls = e.str("tcptls")?.filter(|s| !s.is_empty());
        match (listen, tcptls) {
            (None, Some(_)) => self.left(tcptls_at, "no tcplisten: nothing to protect"),
            (None, None) => {}
            (Some(_), _) if self.control.tcp_listen.is_some() => {
                self.left(listen_at, "receptord has one TCP control listener")
            }
            (Some(l), _) if valid_tcp_listen(&l).is_none() => {
                self.left(listen_at, "receptord binds the TCP control listener to an IP address or a port, not a host name")
            }
            (Some(_), None) => self.left(
                listen_at,
                "a plain TCP control listener lets anyone who connects control the node: receptord refuses it \
                 unless control.insecure_plaintext_control = true (set it by hand, or use tcptls)",
            ),
            (Some(l), Some(t)) => {
                self.control.tcp_listen = Some(l);
                self.control.tcp_tls = Some((t, tcptls_at));
            }
        }
        Ok(())
    }

    pub(super) fn work_command(&mut self, e: &mut yaml::Entry) -> Result<(), ImportError> {
        let req = |e: &mut yaml::Entry, k: &str| -> Result<String, ImportError> {
            let at = e.at(k);
            e.str(k)?
                .filter(|s| !s.is_empty())
                .ok_or(ImportError::Invalid { path: at, reason: "is required".into() })
        };
        let name = req(e, "worktype")?;
        let program = req(e, "command")?;
        let params_at = e.at("params");
        let params = e.str("params")?.unwrap_or_default();
        let args = shlex::split(&params).ok_or_else(|| ImportError::Invalid {
            path: params_at.clone(),
            reason: "unbalanced quotes".into(),
        })?;
        let allow_runtime_params = e.bool("allowruntimeparams")?.unwrap_or(false);
        let verify_signature = e.bool("verifysignature")?.unwrap_or(false);
        let is_runner = Path::new(&program).file_name().is_some_and(|f| f == "ansible-runner")
            && args.first().is_some_and(|a| a == "worker");
        if is_runner && (name == "ansible-runner" || name == "ansible_runner") {
            // AWX's execution nodes: receptord's built-in worker speaks the same protocol.
            if self.ansible_runner.is_some() {
                self.left(e.path.clone(), "a second ansible-runner work type");
                return Ok(());
            }
            if args.len() > 1 {
                self.left(params_at, "the built-in ansible-runner worker takes no extra parameters");
            }
            let path = program.contains('/').then_some(program);
            self.ansible_runner = Some(AnsibleRunner { at: e.path.clone(), path, verify_signature });
            return Ok(());
        }
        if ["ansible_runner", "ansible-runner", "remote"].contains(&name.as_str())
            || self.commands.iter().any(|c| c.name == name)
        {
            self.left(e.path.clone(), format!("the work type name {name:?} is taken in receptord"));
            return Ok(());
        }
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !valid || crate::wire::Name::new(name.as_str()).is_err() {
            self.left(e.at("worktype"), "receptord work type names are letters, digits, '_', '-' or '.'");
            return Ok(());
        }
        self.commands.push(Command {
            path: e.path.clone(),
            name,
            program,
            args,
            allow_runtime_params,
            verify_signature,
        });
        Ok(())
    }

    pub(super) fn work_signing(&mut self, e: &mut yaml::Entry) -> Result<(), ImportError> {
        let Some(key) = e.str("privatekey")?.filter(|s| !s.is_empty()) else { return Ok(()) };
        let at = e.at("tokenexpiration");
        let expiration = match e.str("tokenexpiration")?.filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(go_duration(&s).ok_or(ImportError::Invalid {
                path: at,
                reason: format!("{s:?} is not a duration such as 30m or 1h30m"),
            })?),
        };
        self.signing = Some((key, expiration));
        Ok(())
    }
}
