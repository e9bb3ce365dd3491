//! `examples/cli.sh`, run against the binary built here: every step gives the
//! exit code the script expects, pynisher says why each command stopped, and
//! the JSON report on stdout is complete.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The script takes about 3 s; this is only a guard against a hang.
const TIMEOUT: Duration = Duration::from_secs(120);

fn run_example() -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let child = Command::new("bash")
        .arg(root.join("examples/cli.sh"))
        .current_dir(&root)
        .env("PYNISHER", env!("CARGO_BIN_EXE_pynisher"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("bash starts");
    let group = child.id() as i32;
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match wait.recv_timeout(TIMEOUT) {
        Ok(output) => output.expect("the script's output"),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; the group is
            // the script's own (process_group(0) above), still unreaped.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            panic!("examples/cli.sh did not finish within {TIMEOUT:?}");
        }
    }
}

/// The JSON report: the lines from the first `{` line to the next `}` line.
fn report(stdout: &str) -> serde_json::Value {
    let lines: Vec<&str> = stdout.lines().collect();
    let start = lines
        .iter()
        .position(|line| *line == "{")
        .expect("a JSON report on stdout");
    let end = start
        + lines[start..]
            .iter()
            .position(|line| *line == "}")
            .expect("the end of the JSON report");
    let text = lines[start..=end].join("\n");
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}: {text}"))
}

#[test]
fn the_cli_example_runs_and_each_step_stops_as_it_says() {
    let output = run_example();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let both = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(output.status.success(), "{}\n{both}", output.status);
    assert!(
        stdout.contains("every step gave the exit code it expected"),
        "{both}"
    );

    // The exit codes, in the order of the steps.
    let codes: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("-> exit code "))
        .collect();
    let expected =
        [124, 124, 122, 2, 0, 3, 143, 127, 126, 125].map(|code| format!("{code}, as expected"));
    assert_eq!(codes, expected, "{both}");

    // Why each command stopped (--verbose), and the errors for commands that
    // could not start or options that were bad.
    for why in [
        "pynisher: wall_time: wall time",
        "pynisher: cpu_time: CPU time",
        "pynisher: memory: resident memory of the process tree",
        "pynisher: error: exited with code 2",
        "pynisher: error: exited with code 3",
        "pynisher: crashed: killed by SIGTERM",
        "pynisher: command not found: no-such-command-pynisher-example",
        "pynisher: cannot execute /dev/null",
        "'--wall-time <TIME>'",
    ] {
        assert!(stderr.contains(why), "missing {why:?}\n{both}");
    }

    // The command's output comes first, then the report.
    let started = stdout.find("\nstarted\n").expect("the command's output");
    assert!(started < stdout.find("\n{\n").unwrap(), "{both}");
    let report = report(&stdout);
    assert_eq!(report["status"], "wall_time", "{report}");
    assert_eq!(report["signal_name"], "SIGTERM", "{report}");
    assert_eq!(report["pynisher_exit_code"], 124, "{report}");
    assert_eq!(report["limits"]["wall_time"], 0.3, "{report}");
    assert_eq!(
        report["command"],
        serde_json::json!(["sh", "-c", "echo started; sleep 10"]),
        "{report}"
    );
}
