//! The pass/fail tally of end-to-end drivers: each check prints `ok   <what>` or
//! `FAIL <what>` and is counted for the driver's final `passed=<n> failed=<k>` line.

/// Counted checks.
#[derive(Debug, Default)]
pub struct Checks {
    /// Checks that held.
    pub passed: u32,
    /// Checks that did not.
    pub failed: u32,
}

impl Checks {
    /// Records one check and prints it.
    pub fn check(&mut self, ok: bool, what: &str) {
        if ok {
            self.passed += 1;
            println!("ok   {what}");
        } else {
            self.failed += 1;
            println!("FAIL {what}");
        }
    }
}
