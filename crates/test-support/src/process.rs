//! A supervised child process: it is stopped when this handle is dropped or
//! when the test process exits for any reason (the supervisor shell waits on
//! a pipe from us and kills the program at EOF).

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

const SUPERVISOR: &str = r#"
log="$1"; shift
"$@" >>"$log" 2>&1 &
pid=$!
echo started
read -r _ || true
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
"#;

#[derive(Debug)]
pub struct Supervised {
    child: Child,
    lifeline: Option<ChildStdin>,
}

impl Supervised {
    /// Starts `program args...`, appending its output to `log`.
    pub fn spawn(program: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new("sh")
            .args(["-c", SUPERVISOR, "sh"])
            .arg(log)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let lifeline = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line)?;
        anyhow::ensure!(
            line.trim() == "started",
            "could not start {}",
            program.display()
        );
        Ok(Self { child, lifeline })
    }

    /// Stops the program and waits for it to exit.
    pub fn stop(&mut self) {
        self.lifeline.take();
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}
