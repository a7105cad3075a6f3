//! A small tmpfs mounted for a test (a real full disk), unmounted when dropped. Needs root;
//! `SPARSEBUF_SKIP_MOUNT_TESTS=1` skips the tests that need one where that is impossible.

use std::path::Path;
use std::process::Command;

/// A tmpfs mounted for the test, unmounted when dropped (also when the test fails).
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Tmpfs> {
        if std::env::var_os("SPARSEBUF_SKIP_MOUNT_TESTS").is_some_and(|v| v == "1") {
            eprintln!("SPARSEBUF_SKIP_MOUNT_TESTS=1: skipping the real full-disk test");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            Ok(out) => panic!(
                "could not mount a {size} tmpfs at {} (needs root): {}\n\
                 set SPARSEBUF_SKIP_MOUNT_TESTS=1 to skip this test",
                dir.path().display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!(
                "could not run mount: {e}\nset SPARSEBUF_SKIP_MOUNT_TESTS=1 to skip this test"
            ),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
