//! wrun's log output on stderr: the subscriber `-v`, `-vv` and `WRUN_LOG` set up.

use std::any::TypeId;
use std::sync::OnceLock;
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::filter::Targets;

/// Silent but for warnings by default, as Docker is; `-v`/`-vv` or `WRUN_LOG` for more.
pub fn init_logging(verbose: u8) {
    use tracing_subscriber::layer::SubscriberExt;
    if let Ok(filter) = std::env::var("WRUN_LOG") {
        stderr_format()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .init();
        return;
    }
    // By default only wrun's own warnings: the guest's stderr is wrun's stderr, and a line
    // there the guest did not write (wasmtime-wasi warns on every p1 `sock_*` call) is
    // output the guest never made, which `wasmtime run` does not print either.
    let (own, others) = match verbose {
        0 => (LevelFilter::WARN, LevelFilter::OFF),
        1 => (LevelFilter::DEBUG, LevelFilter::WARN),
        _ => (LevelFilter::TRACE, LevelFilter::TRACE),
    };
    let filter = Targets::new()
        .with_default(others)
        // A prefix: `wrun_hooked` (the test build) too.
        .with_target("wrun", own);
    let deferred_filter = filter.clone();
    let max_level = own.max(others);
    let make = move || {
        stderr_format()
            .with_max_level(max_level)
            .finish()
            .with(filter.clone())
    };
    let _ = if verbose == 0 {
        tracing::subscriber::set_global_default(Deferred::new(deferred_filter, max_level, make))
    } else {
        tracing::subscriber::set_global_default(make())
    };
}

/// Lines on stderr without time or target, coloured on a terminal.
fn stderr_format() -> StderrFormat {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr as fn() -> std::io::Stderr)
        .without_time()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
}

/// What [`stderr_format`] builds from.
type StderrFormat = tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, ()>,
    LevelFilter,
    fn() -> std::io::Stderr,
>;

/// A subscriber made at the first span or event its filter lets through: a run that logs
/// nothing (the default shows only wrun's own warnings, and wrun makes no spans) never makes
/// one. tracing-subscriber's registry, under every `fmt` subscriber, zeroes a 32 KiB table of
/// shards when it is made: 8 page faults in every `wrun` process, and 32 KiB of each idle
/// container, whose monitor and sandbox keep it for their lifetime. Only for that default:
/// it tells `Span::current` nothing, which matters only where spans are shown (`-v`, `-vv`,
/// `WRUN_LOG`).
struct Deferred<S, F> {
    filter: Targets,
    max_level: LevelFilter,
    make: F,
    made: OnceLock<S>,
}

impl<S, F: Fn() -> S> Deferred<S, F> {
    fn new(filter: Targets, max_level: LevelFilter, make: F) -> Self {
        Self {
            filter,
            max_level,
            make,
            made: OnceLock::new(),
        }
    }

    fn inner(&self) -> &S {
        self.made.get_or_init(&self.make)
    }
}

impl<S, F> Subscriber for Deferred<S, F>
where
    S: Subscriber,
    F: Fn() -> S + Send + Sync + 'static,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter
            .would_enable(metadata.target(), metadata.level())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max_level)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.inner().new_span(span)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        self.inner().record(span, values)
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.inner().record_follows_from(span, follows)
    }

    fn event(&self, event: &Event<'_>) {
        self.inner().event(event)
    }

    fn enter(&self, span: &Id) {
        self.inner().enter(span)
    }

    fn exit(&self, span: &Id) {
        self.inner().exit(span)
    }

    fn clone_span(&self, id: &Id) -> Id {
        self.inner().clone_span(id)
    }

    fn try_close(&self, id: Id) -> bool {
        self.inner().try_close(id)
    }

    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            return Some(self as *const Self as *const ());
        }
        // SAFETY: the made subscriber's own contract for the type asked for.
        unsafe { self.inner().downcast_raw(id) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    #[test]
    fn the_subscriber_is_made_at_the_first_event_shown_and_shows_it() {
        let made = Arc::new(AtomicUsize::new(0));
        let lines = Arc::new(Mutex::new(Vec::<u8>::new()));
        let filter = Targets::new()
            .with_default(LevelFilter::OFF)
            .with_target("wrun", LevelFilter::WARN);
        let subscriber = {
            let (made, lines, filter) = (made.clone(), lines.clone(), filter.clone());
            Deferred::new(filter.clone(), LevelFilter::WARN, move || {
                use tracing_subscriber::layer::SubscriberExt;
                made.fetch_add(1, Ordering::SeqCst);
                let lines = lines.clone();
                tracing_subscriber::fmt()
                    .without_time()
                    .with_target(false)
                    .with_ansi(false)
                    .with_writer(move || Lines(lines.clone()))
                    .finish()
                    .with(filter.clone())
            })
        };
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "wrun::test", "not shown");
            tracing::warn!(target: "other", "not shown either");
            assert_eq!(
                made.load(Ordering::SeqCst),
                0,
                "made for events it does not show"
            );
            tracing::warn!(target: "wrun::test", cause = 7, "shown");
            tracing::warn!(target: "wrun::test", "shown again");
        });
        assert_eq!(made.load(Ordering::SeqCst), 1);
        let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
        assert_eq!(text, " WARN shown cause=7\n WARN shown again\n");
    }

    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
