//! What a pool's sandboxes have in common, and so which runs a pool can take as the
//! standalone path would run them.

use crate::config::EngineSettings;
use crate::sandbox::attach;
use crate::spec::{Payload, RunSpec};

/// Most published ports (listening sockets) a claim may pass.
pub const MAX_PORTS: usize = 8;

/// What every sandbox of a pool shares, and so every claim must ask for.
#[derive(Debug, Clone)]
pub struct Shape {
    pub settings: EngineSettings,
    /// Under which the sandboxes' cgroups are made (`run --cgroup-parent`).
    pub cgroup_parent: String,
}

impl Shape {
    /// Why this pool's sandboxes differ from what `spec` asks for, if they do; the cgroup
    /// parent does not matter to a run `placed` in a cgroup of its own.
    pub fn mismatch(&self, spec: &RunSpec, placed: bool) -> Option<String> {
        if spec.sandbox.cgroup_parent != self.cgroup_parent && !placed {
            Some(format!(
                "the pool's cgroup parent is `{}`",
                self.cgroup_parent
            ))
        } else if !self.settings.same_but_interruption(&spec.sandbox.engine) {
            Some("the pool's engine settings differ".to_string())
        } else {
            None
        }
    }
}

/// Why no pooled sandbox can run `spec` as the standalone path would, if none can; `placed`
/// when the claim names the cgroup to move the sandbox to.
pub fn unsuitable(spec: &RunSpec, placed: bool) -> Option<String> {
    let why = match &spec.payload {
        Payload::Native(_) => "a native workload",
        Payload::Wasm(wasm) if wasm.ports.len() > MAX_PORTS => {
            "more published ports than the pool passes"
        }
        Payload::Wasm(wasm) if wasm.preopens.len() > attach::SPARE_MOUNT_POINTS => {
            "more preopened directories than a pooled sandbox has mount points for"
        }
        Payload::Wasm(_) if spec.sandbox.cgroup_name.is_some() && !placed => {
            "a cgroup name of its own"
        }
        Payload::Wasm(_) => return None,
    };
    Some(format!("the pool does not take runs with {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Limits, SandboxSpec, WasmPayload};

    fn spec() -> RunSpec {
        RunSpec {
            sandbox: SandboxSpec::new(Limits::default(), "wrun"),
            payload: Payload::Wasm(WasmPayload {
                module: "/m.wasm".into(),
                args: vec!["m".into()],
                ..WasmPayload::default()
            }),
        }
    }

    fn wasm(spec: &mut RunSpec) -> &mut WasmPayload {
        match &mut spec.payload {
            Payload::Wasm(wasm) => wasm,
            Payload::Native(_) => unreachable!(),
        }
    }

    #[test]
    fn the_pool_takes_plain_runs_of_its_own_shape_only() {
        let shape = Shape {
            settings: EngineSettings::default(),
            cgroup_parent: "wrun".into(),
        };
        let plain = spec();
        assert_eq!(unsuitable(&plain, false), None);
        assert_eq!(shape.mismatch(&plain, false), None);
        let mut other_parent = spec();
        other_parent.sandbox.cgroup_parent = "elsewhere".into();
        assert!(shape
            .mismatch(&other_parent, false)
            .unwrap()
            .contains("cgroup parent"));
        // A bundle's cgroup: taken only when the claim has the sandbox moved there.
        let mut named = other_parent.clone();
        named.sandbox.cgroup_name = Some("task-1".into());
        assert!(unsuitable(&named, false).unwrap().contains("cgroup name"));
        assert_eq!(unsuitable(&named, true), None);
        assert_eq!(shape.mismatch(&named, true), None);
        let mut other_engine = spec();
        other_engine.sandbox.engine.pooling_allocator = true;
        assert!(shape.mismatch(&other_engine, true).is_some());
        // Interruption checks: the pool has an engine with them and one without.
        let mut interrupting = spec();
        interrupting.sandbox.engine.epoch_interruption = true;
        assert_eq!(shape.mismatch(&interrupting, false), None);
        // Up to what the pool passes of each is taken; one more is refused, saying what.
        let dir = || crate::spec::Preopen::parse("/tmp").unwrap();
        let port = || crate::spec::PublishedPort::parse("8080:80").unwrap();
        type Add<'a> = &'a dyn Fn(&mut WasmPayload);
        let cases: [(&str, usize, Add); 2] = [
            ("preopened", attach::SPARE_MOUNT_POINTS, &|w| {
                w.preopens.push(dir())
            }),
            ("ports", MAX_PORTS, &|w| w.ports.push(port())),
        ];
        for (what, most, add) in cases {
            let mut run = spec();
            (0..most).for_each(|_| add(wasm(&mut run)));
            assert_eq!(unsuitable(&run, false), None, "{what}");
            add(wasm(&mut run));
            assert!(unsuitable(&run, false).unwrap().contains(what), "{what}");
        }
        let mut outbound = spec();
        wasm(&mut outbound)
            .allow_outbound
            .push(crate::spec::OutboundRule::parse("example.com").unwrap());
        assert_eq!(unsuitable(&outbound, false), None);
    }
}
