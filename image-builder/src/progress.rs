//! Progress for the long steps: a spinner with elapsed time on a terminal,
//! plain lines otherwise (CI logs).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// One step of the build, shown while it runs.
pub struct Step {
    bar: Option<ProgressBar>,
    title: String,
    start: Instant,
}

impl Step {
    pub fn start(title: impl Into<String>) -> Step {
        let title = title.into();
        let bar = if std::io::stderr().is_terminal() {
            let b = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
                b.set_style(style);
            }
            b.set_message(title.clone());
            b.enable_steady_tick(Duration::from_millis(120));
            Some(b)
        } else {
            eprintln!("kiln-image: {title}…");
            None
        };
        Step {
            bar,
            title,
            start: Instant::now(),
        }
    }

    /// Ends the step with a short result, e.g. a size.
    pub fn done(self, result: &str) {
        let line = format!(
            "{} — {} ({:.1} s)",
            self.title,
            result,
            self.start.elapsed().as_secs_f64()
        );
        // The spinner gives way to the same plain line a log would get.
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        eprintln!("kiln-image: {line}");
    }
}
