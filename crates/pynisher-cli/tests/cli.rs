//! The `pynisher` binary, end to end with real commands.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PYNISHER: &str = env!("CARGO_BIN_EXE_pynisher");
const SLACK: Duration = Duration::from_secs(1);

fn pynisher(args: &[&str]) -> Command {
    let mut command = Command::new(PYNISHER);
    command.args(args);
    command
}

fn run(args: &[&str]) -> Output {
    pynisher(args).output().unwrap()
}

fn code(output: &Output) -> i32 {
    output
        .status
        .code()
        .expect("pynisher was killed by a signal")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn temp_dir(label: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "pynisher-cli-test-{label}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `sleep` argument no other test uses, to find the processes again.
fn marker() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{}.{:04}{}", 400 + n, std::process::id() % 10_000, n)
}

/// Live (non-zombie) processes whose command line contains `marker`.
fn live_with_marker(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let state = stat
            .rfind(')')
            .and_then(|close| stat[close + 1..].split_whitespace().next())
            .unwrap_or("X");
        if matches!(state, "Z" | "X" | "x") {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` at most `timeout`; kills it and fails the test after.
fn wait_for(child: &mut Child, timeout: Duration) -> ExitStatus {
    let until = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            panic!("pynisher did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn send(child: &Child, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions; the child is unreaped
    // so its pid is still ours.
    unsafe { libc::kill(child.id() as i32, signal) };
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("{err}: {text}"))
}

#[test]
fn sleep_is_stopped_at_the_wall_limit() {
    let started = Instant::now();
    let output = run(&["--wall-time", "0.5s", "--", "sleep", "30"]);
    let took = started.elapsed();
    assert_eq!(code(&output), 124, "{}", stderr(&output));
    assert!(took >= Duration::from_millis(500), "{took:?}");
    // limit + grace period (1 s by default) + slack
    assert!(took < Duration::from_millis(1500) + SLACK, "{took:?}");
}

#[test]
fn a_busy_loop_is_stopped_at_the_cpu_limit() {
    let output = run(&[
        "--cpu-time",
        "500ms",
        "--wall-time",
        "20s",
        "--json",
        "-",
        "--",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    assert_eq!(code(&output), 124, "{}", stderr(&output));
    let report = json(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(report["status"], "cpu_time");
    let cpu = report["cpu_time"].as_f64().unwrap();
    assert!(cpu >= 0.5, "{report}");
    // The limit bounds CPU time; wall time stretches on a loaded machine.
    assert!(cpu < 0.5 + 1.0 + SLACK.as_secs_f64(), "{report}");
}

#[test]
fn allocating_under_the_address_space_limit_fails_in_the_command() {
    let output = run(&[
        "--memory",
        "200MB",
        "--memory-mode",
        "address-space",
        "--json",
        "-",
        "--",
        "python3",
        "-c",
        "bytearray(1 << 30)",
    ]);
    // Python sees the failed allocation, raises MemoryError and exits with 1;
    // pynisher passes that through.
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("MemoryError"),
        "{}",
        stderr(&output)
    );
    let report = json(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(report["status"], "error");
    assert_eq!(report["limits"]["memory"], 200 << 20);
    assert_eq!(report["limits"]["memory_mode"], "address_space");

    // Within the limit the same program runs.
    let output = run(&[
        "--memory",
        "200MB",
        "--memory-mode",
        "address_space",
        "--",
        "python3",
        "-c",
        "b = bytearray(50 << 20)",
    ]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
}

#[test]
fn allocating_over_the_resident_limit_gets_the_memory_code() {
    // Resident memory of the whole tree is the default mode.
    let started = Instant::now();
    let output = run(&[
        "--memory",
        "150MB",
        "--wall-time",
        "20s",
        "--json",
        "-",
        "--",
        "python3",
        "-c",
        "import time\nb = b'x' * (400 << 20)\ntime.sleep(30)",
    ]);
    assert_eq!(code(&output), 122, "{}", stderr(&output));
    let report = json(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(report["status"], "memory");
    assert_eq!(report["limits"]["memory_mode"], "resident");
    assert!(
        report["peak_memory"].as_u64().unwrap() > 150 << 20,
        "{report}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A script that starts a child, a `setsid` grandchild and a double-forked
/// `setsid` great-grandchild, each a `sleep MARKER`.
fn spawning_script(marker: &str, pause: &str, then: &str) -> String {
    format!(
        "sleep {marker} &\n\
         setsid sleep {marker} &\n\
         (setsid sh -c 'sleep {marker} & wait' &)\n\
         {pause}\n\
         {then}\n"
    )
}

fn assert_none_survive(marker: &str) {
    let gone = eventually(Duration::from_secs(2), || {
        live_with_marker(marker).is_empty()
    });
    assert!(gone, "survivors: {:?}", live_with_marker(marker));
}

#[test]
fn no_descendant_survives_a_limit() {
    let marker = marker();
    let output = run(&[
        "--wall-time",
        "1",
        "--",
        "sh",
        "-c",
        &spawning_script(&marker, "sleep 0.3", "sleep 30"),
    ]);
    assert_eq!(code(&output), 124, "{}", stderr(&output));
    assert_none_survive(&marker);
}

#[test]
fn no_descendant_survives_a_command_that_exits() {
    // With a pause, the supervisor has seen everything before the exit.
    let marker = marker();
    let output = run(&[
        "--",
        "sh",
        "-c",
        &spawning_script(&marker, "sleep 0.3", "exit 0"),
    ]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_none_survive(&marker);

    // Without one, the orphans are reparented to pynisher, which kills them.
    let marker = self::marker();
    let output = run(&["--", "sh", "-c", &spawning_script(&marker, ":", "exit 0")]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_none_survive(&marker);
}

#[test]
fn exit_codes_and_signals_pass_through() {
    assert_eq!(code(&run(&["--", "true"])), 0);
    assert_eq!(code(&run(&["--", "sh", "-c", "exit 3"])), 3);
    assert_eq!(code(&run(&["--", "sh", "-c", "exit 200"])), 200);
    assert_eq!(
        code(&run(&["--", "sh", "-c", "kill -TERM $$"])),
        128 + libc::SIGTERM
    );
    assert_eq!(
        code(&run(&["--", "sh", "-c", "kill -SEGV $$"])),
        128 + libc::SIGSEGV
    );
    // Options after the command belong to the command.
    assert_eq!(code(&run(&["sh", "-c", "exit 4", "--wall-time"])), 4);
}

#[test]
fn a_missing_command_exits_127() {
    let output = run(&["--", "pynisher-no-such-command"]);
    assert_eq!(code(&output), 127);
    assert!(
        stderr(&output).contains("command not found: pynisher-no-such-command"),
        "{}",
        stderr(&output)
    );
    let output = run(&["--", "/nonexistent/pynisher-no-such-command"]);
    assert_eq!(code(&output), 127);
}

#[test]
fn a_command_that_cannot_run_exits_126() {
    let dir = temp_dir("not-executable");
    let plain = dir.join("plain");
    std::fs::write(&plain, "echo hi\n").unwrap();
    let output = run(&["--", plain.to_str().unwrap()]);
    assert_eq!(code(&output), 126, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot execute"),
        "{}",
        stderr(&output)
    );
    let output = run(&["--", dir.to_str().unwrap()]);
    assert_eq!(code(&output), 126, "{}", stderr(&output));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_executable_script_without_a_shebang_runs_with_sh() {
    let dir = temp_dir("no-shebang");
    let script = dir.join("script");
    std::fs::write(&script, "echo \"sh ran $0 with $1\"\nexit 3\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = run(&["--", script.to_str().unwrap(), "an-argument"]);
    assert_eq!(code(&output), 3, "{}", stderr(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("sh ran {} with an-argument\n", script.display())
    );
    // Found through PATH, too.
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let output = pynisher(&["--", "script", "x"])
        .env("PATH", path)
        .output()
        .unwrap();
    assert_eq!(code(&output), 3, "{}", stderr(&output));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_command_that_ignores_sigterm_at_the_wall_limit_is_reported_killed_by_sigkill() {
    let output = run(&[
        "--wall-time",
        "300ms",
        "--grace-period",
        "300ms",
        "--json",
        "-",
        "--",
        "sh",
        "-c",
        "trap '' TERM; while :; do sleep 0.05; done",
    ]);
    assert_eq!(code(&output), 124, "{}", stderr(&output));
    let report = json(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(report["signal_name"], "SIGKILL");
    let detail = report["detail"].as_str().unwrap();
    assert!(
        detail.contains("sent SIGTERM, still running after the grace period of 0.3 s")
            && detail.ends_with("killed with SIGKILL"),
        "{detail}"
    );
    // A command that SIGTERM does stop is reported as stopped with SIGTERM.
    let output = run(&["--wall-time", "300ms", "--json", "-", "--", "sleep", "10"]);
    let report = json(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(report["signal_name"], "SIGTERM");
    assert!(
        report["detail"]
            .as_str()
            .unwrap()
            .ends_with("stopped with SIGTERM"),
        "{report}"
    );
}

/// Runs pynisher with `args` on a new pseudo-terminal, in its foreground
/// (as a shell prompt would), types `input` and returns what the terminal
/// showed and pynisher's exit code. Python's `pty` module does the work.
fn run_on_a_terminal(args: &[&str], input: &str) -> (String, i32) {
    const SCRIPT: &str = r#"
import json, os, pty, select, sys, time
argv, data = json.loads(sys.argv[1]), sys.argv[2].encode()
pid, master = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
time.sleep(0.5)
os.write(master, data)
out, deadline = b"", time.time() + 20
while time.time() < deadline:
    if select.select([master], [], [], 0.1)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    elif os.waitpid(pid, os.WNOHANG)[0]:
        pid = 0
        break
code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) if pid else None
print(json.dumps([out.decode(errors="replace"), code]))
"#;
    let mut argv = vec![PYNISHER];
    argv.extend_from_slice(args);
    let argv = serde_json::to_string(&argv).unwrap();
    let output = Command::new("python3")
        .args(["-c", SCRIPT, &argv, input])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let result = json(&String::from_utf8_lossy(&output.stdout));
    let code = result[1].as_i64().map_or(-1, |c| c as i32);
    (result[0].as_str().unwrap().to_owned(), code)
}

#[test]
fn foreground_lets_the_command_read_the_terminal() {
    let reader = ["sh", "-c", "read line; echo \"got:$line\"; exit 5"];
    let mut args = vec!["--wall-time", "5", "--foreground", "--"];
    args.extend(reader);
    let (screen, code) = run_on_a_terminal(&args, "hello\n");
    assert_eq!(code, 5, "{screen}");
    assert!(screen.contains("got:hello"), "{screen}");

    // Ctrl-C on the terminal reaches the command directly.
    let (screen, code) = run_on_a_terminal(&args, "\x03");
    assert_eq!(code, 128 + libc::SIGINT, "{screen}");

    // Without --foreground the command is in a background group of the
    // terminal: reading stops it, and the wall-time limit ends it.
    let mut args = vec!["--wall-time", "1.5", "--"];
    args.extend(reader);
    let (screen, code) = run_on_a_terminal(&args, "hello\n");
    assert_eq!(code, 124, "{screen}");
    assert!(!screen.contains("got:hello"), "{screen}");
}

/// A tiny job-control shell on a pseudo-terminal (Python's `pty`) that runs
/// `argv` as its foreground job, as bash does; the test types Ctrl-Z, waits
/// for the shell to see the job stop, lets it continue it (`fg`) and types a
/// line. Returns what the terminal showed.
const JOB_CONTROL_SHELL: &str = r#"
import json, os, pty, select, signal, sys, time
argv = json.loads(sys.argv[1])
pid, master = pty.fork()
if pid == 0:
    # A tiny job-control shell: pynisher is its foreground job.
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    job = os.fork()
    if job == 0:
        os.setpgid(0, 0)
        os.tcsetpgrp(0, os.getpid())
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        os.execv(argv[0], argv)
    os.setpgid(job, job)
    os.tcsetpgrp(0, job)
    _, status = os.waitpid(job, os.WUNTRACED)
    os.tcsetpgrp(0, os.getpgrp())
    print("stopped" if os.WIFSTOPPED(status) else "not stopped", flush=True)
    if os.WIFSTOPPED(status):
        os.tcsetpgrp(0, job)
        os.killpg(job, signal.SIGCONT)
        _, status = os.waitpid(job, 0)
        os.tcsetpgrp(0, os.getpgrp())
    print("exit", os.waitstatus_to_exitcode(status), flush=True)
    os._exit(0)
def read_until(text, timeout):
    global out
    deadline = time.time() + timeout
    while (text is None or text not in out) and time.time() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            out += chunk.decode(errors="replace")
out = ""
time.sleep(0.5)
os.write(master, b"\x1a")
read_until("stopped", 10)
time.sleep(0.3)
os.write(master, b"hello\n")
# To the end: "exit" alone may arrive before the rest of its line.
read_until(None, 10)
os.waitpid(pid, 0)
print(json.dumps(out))
"#;

#[test]
fn foreground_passes_ctrl_z_on_to_the_shell() {
    let mut argv = vec![PYNISHER, "--wall-time", "20", "--foreground", "--"];
    argv.extend(["sh", "-c", "read line; echo \"got:$line\"; exit 5"]);
    let argv = serde_json::to_string(&argv).unwrap();
    let output = Command::new("python3")
        .args(["-c", JOB_CONTROL_SHELL, &argv])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let screen = json(&String::from_utf8_lossy(&output.stdout));
    let screen = screen.as_str().unwrap();
    // Ctrl-Z stopped the command, and pynisher stopped too, so the shell
    // saw its job stop; after `fg` the command read the line.
    let stopped = screen.find("stopped\r\n").expect(screen);
    let got = screen.find("got:hello").expect(screen);
    assert!(stopped < got, "{screen}");
    assert!(screen.ends_with("exit 5\r\n"), "{screen}");
}

#[test]
fn bad_option_values_exit_125_naming_the_option() {
    let cases: &[(&[&str], &str)] = &[
        (&["--wall-time", "0", "true"], "--wall-time"),
        (&["--wall-time", "soon", "true"], "--wall-time"),
        (&["--wall-time", "5 fortnights", "true"], "--wall-time"),
        (&["--cpu-time", "-1", "true"], "--cpu-time"),
        (&["--memory", "5XB", "true"], "--memory"),
        (&["--memory", "0MB", "true"], "--memory"),
        (&["--memory", "-5MB", "true"], "--memory"),
        (&["--grace-period", "-1", "true"], "--grace-period"),
        (&["--memory-mode", "rss", "true"], "--memory-mode"),
        (&["--grace-period", "later", "true"], "--grace-period"),
        (&["--bogus", "true"], "--bogus"),
        (&["--wall-time", "1"], "COMMAND"),
    ];
    for (args, option) in cases {
        let output = run(args);
        assert_eq!(code(&output), 125, "{args:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(option),
            "{args:?} should name {option}: {}",
            stderr(&output)
        );
    }
    let dir = temp_dir("bad-json");
    let missing = dir.join("missing").join("report.json");
    let output = run(&["--json", missing.to_str().unwrap(), "--", "true"]);
    assert_eq!(code(&output), 125);
    assert!(stderr(&output).contains("--json"), "{}", stderr(&output));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_and_version_exit_0() {
    let output = run(&["--help"]);
    assert_eq!(code(&output), 0);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("--wall-time") && help.contains("122"),
        "{help}"
    );
    assert_eq!(code(&run(&["--version"])), 0);
}

fn assert_report_fields(report: &serde_json::Value) {
    for field in [
        "status",
        "detail",
        "error",
        "command",
        "limits",
        "exit_code",
        "signal",
        "signal_name",
        "wall_time",
        "cpu_user",
        "cpu_system",
        "cpu_time",
        "peak_memory",
        "pynisher_exit_code",
    ] {
        assert!(report.get(field).is_some(), "{field} missing: {report}");
    }
    for field in [
        "wall_time",
        "cpu_time",
        "memory",
        "memory_mode",
        "grace_period",
    ] {
        assert!(
            report["limits"].get(field).is_some(),
            "limits.{field} missing: {report}"
        );
    }
}

#[test]
fn the_json_report_has_every_field() {
    let dir = temp_dir("json");
    let path = dir.join("report.json");
    let output = run(&[
        "--wall-time",
        "0.3",
        "--cpu-time",
        "10s",
        "--memory",
        "1GB",
        "--grace-period",
        "250ms",
        "--json",
        path.to_str().unwrap(),
        "--",
        "sleep",
        "30",
    ]);
    assert_eq!(code(&output), 124);
    let report = json(&std::fs::read_to_string(&path).unwrap());
    assert_report_fields(&report);
    assert_eq!(report["status"], "wall_time");
    assert!(report["detail"].as_str().unwrap().contains("wall time"));
    assert!(report["error"].is_null());
    assert_eq!(report["command"], serde_json::json!(["sleep", "30"]));
    assert_eq!(report["limits"]["wall_time"], 0.3);
    assert_eq!(report["limits"]["cpu_time"], 10.0);
    assert_eq!(report["limits"]["memory"], 1u64 << 30);
    assert_eq!(report["limits"]["memory_mode"], "resident");
    assert_eq!(report["limits"]["grace_period"], 0.25);
    assert!(report["exit_code"].is_null());
    assert_eq!(report["signal"], libc::SIGTERM);
    assert_eq!(report["signal_name"], "SIGTERM");
    let wall = report["wall_time"].as_f64().unwrap();
    assert!((0.3..0.3 + 0.25 + 1.0).contains(&wall), "{wall}");
    assert!(report["cpu_user"].as_f64().unwrap() >= 0.0);
    assert!(report["cpu_system"].as_f64().unwrap() >= 0.0);
    assert!(report["peak_memory"].as_u64().unwrap() > 0);
    assert_eq!(report["pynisher_exit_code"], 124);

    // A normal exit, reported on stdout after the command's own output.
    let output = run(&["--json", "-", "--", "sh", "-c", "echo hello; exit 3"]);
    assert_eq!(code(&output), 3);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (first, rest) = stdout.split_once('\n').unwrap();
    assert_eq!(first, "hello");
    let report = json(rest);
    assert_report_fields(&report);
    assert_eq!(report["status"], "error");
    assert_eq!(report["exit_code"], 3);
    assert!(report["signal"].is_null());
    assert!(report["limits"]["wall_time"].is_null());

    // A command that never started still gets a report.
    let output = run(&["--json", "-", "--", "pynisher-no-such-command"]);
    assert_eq!(code(&output), 127);
    let report = json(&String::from_utf8_lossy(&output.stdout));
    assert_report_fields(&report);
    assert!(report["status"].is_null());
    assert!(report["error"]
        .as_str()
        .unwrap()
        .contains("command not found"));
    assert_eq!(report["pynisher_exit_code"], 127);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn streams_are_inherited() {
    let mut child = pynisher(&["--", "sh", "-c", "cat; echo err >&2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(code(&output), 0);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "through stdin\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");
}

/// Starts pynisher on `script` and waits until the script has written
/// `ready` into `dir/ready`.
fn start_script(dir: &Path, options: &[&str], script: &str) -> Child {
    let ready = dir.join("ready");
    let mut args: Vec<&str> = options.to_vec();
    args.extend(["--", "sh", "-c", script]);
    let mut child = pynisher(&args).current_dir(dir).spawn().unwrap();
    if !eventually(Duration::from_secs(5), || ready.exists()) {
        let _ = child.kill();
        panic!("the script never got ready");
    }
    child
}

#[test]
fn sigint_is_forwarded_to_the_command() {
    let dir = temp_dir("sigint");
    let mut child = start_script(
        &dir,
        &[],
        "trap 'exit 5' INT; touch ready; while :; do sleep 0.05; done",
    );
    send(&child, libc::SIGINT);
    let status = wait_for(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(5));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_reaches_the_whole_tree() {
    let dir = temp_dir("sigterm");
    let marker = marker();
    let mut child = start_script(
        &dir,
        &[],
        &format!("sleep {marker} & setsid sleep {marker} & sleep 0.2; touch ready; wait"),
    );
    let sleeps = live_with_marker(&marker)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
                == format!("sleep\0{marker}\0").into_bytes()
        })
        .count();
    assert_eq!(sleeps, 2);
    let started = Instant::now();
    send(&child, libc::SIGTERM);
    let status = wait_for(&mut child, Duration::from_secs(5));
    // The shell died of the forwarded SIGTERM, well before the grace period.
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_none_survive(&marker);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_command_that_ignores_the_forwarded_signal_is_killed_after_the_grace_period() {
    let dir = temp_dir("ignore-term");
    let mut child = start_script(
        &dir,
        &["--grace-period", "300ms"],
        "trap '' TERM; touch ready; while :; do sleep 0.05; done",
    );
    let started = Instant::now();
    send(&child, libc::SIGTERM);
    let status = wait_for(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(300) + SLACK, "{took:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_second_signal_kills_at_once() {
    let dir = temp_dir("second-signal");
    let mut child = start_script(
        &dir,
        &["--grace-period", "30s"],
        "trap '' INT; touch ready; while :; do sleep 0.05; done",
    );
    send(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    send(&child, libc::SIGINT);
    let status = wait_for(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn limits_beyond_the_clock_never_panic() {
    // 1.8e19 s fits a Duration, but no clock can add it to now.
    let huge = "18000000000000000000";
    let output = run(&[
        "--wall-time",
        huge,
        "--cpu-time",
        huge,
        "--grace-period",
        huge,
        "--",
        "true",
    ]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let output = run(&[
        "--wall-time",
        "0.2",
        "--grace-period",
        huge,
        "--",
        "sleep",
        "30",
    ]);
    assert_eq!(code(&output), 124, "{}", stderr(&output));
    // A forwarded signal starts the grace period too.
    let dir = temp_dir("huge-grace");
    let mut child = start_script(
        &dir,
        &["--grace-period", huge],
        "trap 'exit 5' INT; touch ready; while :; do sleep 0.05; done",
    );
    send(&child, libc::SIGINT);
    let status = wait_for(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(5));
    let _ = std::fs::remove_dir_all(dir);
}
