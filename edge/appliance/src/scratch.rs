//! Scratch directories for the crate's unit tests: a directory under the system's temporary
//! directory named after the test and the process, emptied when made and removed when dropped
//! (also when the test fails), so test runs leave nothing behind.

use std::path::{Path, PathBuf};

/// A test's own directory (not created: the code under test or the test does that).
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    /// `$TMPDIR/sase-<area>-<name>-<pid>`, removed first if a killed run left it.
    pub(crate) fn new(area: &str, name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sase-{area}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
