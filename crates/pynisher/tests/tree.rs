//! Finding a call's tree: following the kernel's children lists finds what a
//! scan of every process on the machine finds, orphans included.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use pynisher::sys;
use pynisher::tree::Tree;

/// A shell that leads its own process group and is a child subreaper, as
/// every call's process is, and leaves behind: a child, a grandchild, and an orphan whose parent exited
/// (so it was reparented to the shell). Six processes below it in all.
fn subreaper_with_a_tree() -> Child {
    let script = "sleep 60 & sh -c 'sleep 60 & wait' & (sleep 60 &); wait";
    let mut command = Command::new("sh");
    command.args(["-c", script]).process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().expect("sh")
}

/// Waits until `root` has `n` processes below it (by the full scan).
fn wait_for_descendants(root: i32, n: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let mut probe = Tree::new(root);
        if probe.discover() >= n {
            return;
        }
        assert!(
            Instant::now() < until,
            "the tree of {root} never grew to {n} processes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The shell of [`subreaper_with_a_tree`] and its pid, once its four
/// descendants are there (sleep, sh, its sleep, the orphan sleep; the
/// subshell that started the orphan has exited). `None`, after saying so,
/// where the kernel keeps no children lists.
fn started_tree() -> Option<(Child, i32)> {
    if sys::children_of(std::process::id() as i32).is_none() {
        eprintln!("SKIPPED: this kernel keeps no children lists");
        return None;
    }
    let root = subreaper_with_a_tree();
    let pid = root.id() as i32;
    wait_for_descendants(pid, 4);
    Some((root, pid))
}

#[test]
fn following_the_children_lists_finds_what_a_full_scan_finds() {
    let Some((mut root, pid)) = started_tree() else {
        return;
    };

    let mut followed = Tree::new(pid);
    let found = followed.follow();
    let mut scanned = Tree::new(pid);
    let found_by_scan = scanned.discover();
    assert_eq!(
        found, found_by_scan,
        "follow found {found}, the scan {found_by_scan}"
    );
    assert_eq!(found, 4);
    // What the scan would add to the followed tree: nothing.
    assert_eq!(followed.discover(), 0);
    // A second follow adopts nothing twice.
    assert_eq!(followed.follow(), 0);

    followed.kill_all(None, Duration::from_secs(5));
    let _ = root.kill();
    let _ = root.wait();
    assert_eq!(followed.measure(false).alive, 0, "every member was killed");
}

#[test]
fn once_the_root_is_gone_following_falls_back_to_the_scan() {
    let Some((mut root, pid)) = started_tree() else {
        return;
    };
    // The shell dies unreaped before anything of its tree was adopted: its
    // children are reparented away, onto no list of the tree's, and only
    // their process group (the shell's) still leads to them.
    // SAFETY: a plain kill of our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let until = Instant::now() + Duration::from_secs(10);
    while sys::ProcStat::read(pid).is_some_and(|stat| !stat.is_exited()) {
        assert!(Instant::now() < until, "the shell did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut tree = Tree::new(pid);
    assert_eq!(
        tree.follow(),
        4,
        "the scan finds the orphans by their group"
    );
    tree.kill_all(None, Duration::from_secs(5));
    assert_eq!(tree.measure(false).alive, 0);
    let _ = root.wait();
}
