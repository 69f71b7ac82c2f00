//! The image's `StopSignal` (`SIGQUIT`, `QUIT`, `3`), which StopContainer
//! sends before the SIGKILL of its timeout. An image without one stops
//! with SIGTERM, as Docker and containerd do.

use nix::sys::signal::Signal;

use super::RuntimeError;

/// The signal StopContainer sends first, as a number (records keep it so).
pub fn parse(value: Option<&str>) -> Result<i32, RuntimeError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Signal::SIGTERM as i32);
    };
    let invalid = |problem: String| RuntimeError::Invalid {
        field: "image config StopSignal",
        problem,
    };
    let signal = match value.parse::<i32>() {
        Ok(n) => Signal::try_from(n).map_err(|_| invalid(format!("{n} is not a signal")))?,
        Err(_) => {
            let upper = value.to_ascii_uppercase();
            let name = if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            };
            name.parse::<Signal>()
                .map_err(|_| invalid(format!("{value:?} is not a signal name")))?
        }
    };
    Ok(signal as i32)
}

/// SIGTERM, for records written before the stop signal was kept.
pub fn default() -> i32 {
    Signal::SIGTERM as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_the_default() {
        assert_eq!(parse(None).unwrap(), 15);
        assert_eq!(parse(Some("")).unwrap(), 15);
        assert_eq!(parse(Some("SIGQUIT")).unwrap(), 3);
        assert_eq!(parse(Some("usr1")).unwrap(), 10);
        assert_eq!(parse(Some("9")).unwrap(), 9);
        let e = parse(Some("SIGNOPE")).unwrap_err().to_string();
        assert!(e.contains("StopSignal") && e.contains("SIGNOPE"), "{e}");
        assert!(parse(Some("99")).is_err());
    }
}
