//! `pynisher._core`: the PyO3 binding of the pynisher core.
//!
//! It only converts types. Argument handling, pickling and the mapping of
//! outcomes to exceptions live in the Python package; every process operation
//! lives in the core crate.

use std::time::{Duration, Instant};

mod buffer;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyFloat, PyInt, PyString, PyTuple};

use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};

use pynisher::channel::{Payload, Sender, Tag};
use pynisher::child::{CheckedSteps, ChildSetup, StepError};
use pynisher::exec::{Program, INTERPRETER_MEMFD, INTERPRETER_RESULT_FD};
use pynisher::forkserver::{CallStart, ForkServer, Starting};
use pynisher::terminal::Terminal;
use pynisher::{CallOptions, ForkHooks, Limits, MemoryMode, Status, Stop};

/// Where a fresh interpreter finds its request.
const REQUEST_FD: i32 = 5;

/// Where a forkserver finds the file in which it notes each module it
/// imports before it serves (see `pynisher._forkserver`).
const FORKSERVER_IMPORTS_FD: i32 = pynisher::forkserver::CONTROL_FD + 1;

pyo3::import_exception!(pynisher._exceptions, PynisherException);
pyo3::import_exception!(pynisher._exceptions, ForkServerError);

/// Turns a core error into the Python exception a user expects: bad arguments
/// are `ValueError`, everything else `PynisherException`. The one place where
/// core errors become Python errors.
fn to_py_err(err: pynisher::Error) -> PyErr {
    match err.kind() {
        pynisher::ErrorKind::InvalidArgument { .. } => PyValueError::new_err(err.to_string()),
        pynisher::ErrorKind::ForkServer(_) => ForkServerError::new_err(err.to_string()),
        _ => PynisherException::new_err(err.to_string()),
    }
}

/// Reads a number, a unit string such as "1.5h", or a `(number, unit)` tuple.
enum Quantity {
    Number(f64),
    Text(String),
    WithUnit(f64, String),
}

fn quantity(argument: &str, value: &Bound<'_, PyAny>) -> PyResult<Quantity> {
    let bad = || {
        PyValueError::new_err(format!(
            "{argument}: expected a number, a string such as \"1.5h\" or \"500MB\", \
             or a (number, unit) tuple, got {}",
            value.repr().map_or_else(|_| "?".into(), |r| r.to_string())
        ))
    };
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(bad());
    }
    if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
        return Ok(Quantity::Number(value.extract::<f64>().map_err(|_| bad())?));
    }
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(Quantity::Text(text.to_string()));
    }
    if let Ok(tuple) = value.cast::<PyTuple>() {
        if tuple.len() == 2 {
            let number = tuple.get_item(0)?;
            let unit = tuple.get_item(1)?;
            if !number.is_instance_of::<pyo3::types::PyBool>() {
                if let (Ok(number), Ok(unit)) = (number.extract::<f64>(), unit.extract::<String>())
                {
                    return Ok(Quantity::WithUnit(number, unit));
                }
            }
        }
    }
    Err(bad())
}

/// Converts an optional Python limit with the core's parsers: a bare number
/// is in `base_unit`.
fn limit_arg<T>(
    argument: &str,
    value: Option<&Bound<'_, PyAny>>,
    base_unit: &str,
    from_number: fn(&str, f64, &str) -> pynisher::Result<T>,
    parse: fn(&str, &str) -> pynisher::Result<T>,
) -> PyResult<Option<T>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let parsed = match quantity(argument, value)? {
        Quantity::Number(n) => from_number(argument, n, base_unit),
        Quantity::Text(text) => parse(argument, &text),
        Quantity::WithUnit(n, unit) => from_number(argument, n, &unit),
    };
    parsed.map(Some).map_err(to_py_err)
}

fn duration_arg(argument: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    limit_arg(
        argument,
        value,
        "s",
        pynisher::duration_from_number,
        pynisher::parse_duration,
    )
}

fn bytes_arg(argument: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    limit_arg(
        argument,
        value,
        "B",
        pynisher::bytes_from_number,
        pynisher::parse_bytes,
    )
}

/// Validated limits for one `Pynisher`, built once when it is constructed.
#[pyclass(name = "Limits", module = "pynisher._core", frozen)]
struct LimitsPy(Limits);

#[pymethods]
impl LimitsPy {
    #[new]
    #[pyo3(signature = (*, wall_time=None, cpu_time=None, memory=None, memory_mode="address_space", grace_period=None))]
    fn new(
        wall_time: Option<&Bound<'_, PyAny>>,
        cpu_time: Option<&Bound<'_, PyAny>>,
        memory: Option<&Bound<'_, PyAny>>,
        memory_mode: &str,
        grace_period: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        // Zero is allowed in every form (0, "0", (0, "s")): SIGKILL right away.
        let grace = limit_arg(
            "grace_period",
            grace_period,
            "s",
            pynisher::grace_period_from_number,
            pynisher::parse_grace_period,
        )?
        .unwrap_or(Duration::from_secs(1));
        let limits = Limits {
            wall_time: duration_arg("wall_time", wall_time)?,
            cpu_time: duration_arg("cpu_time", cpu_time)?,
            memory: bytes_arg("memory", memory)?,
            memory_mode: memory_mode.parse::<MemoryMode>().map_err(to_py_err)?,
            grace_period: grace,
        };
        limits.validate().map_err(to_py_err)?;
        Ok(LimitsPy(limits))
    }

    /// Wall-time limit in seconds, or None.
    #[getter]
    fn wall_time(&self) -> Option<f64> {
        self.0.wall_time.map(|d| d.as_secs_f64())
    }

    /// CPU-time limit in seconds, or None.
    #[getter]
    fn cpu_time(&self) -> Option<f64> {
        self.0.cpu_time.map(|d| d.as_secs_f64())
    }

    /// Memory limit in bytes, or None.
    #[getter]
    fn memory(&self) -> Option<u64> {
        self.0.memory
    }

    #[getter]
    fn memory_mode(&self) -> &'static str {
        self.0.memory_mode.as_str()
    }

    #[getter]
    fn grace_period(&self) -> f64 {
        self.0.grace_period.as_secs_f64()
    }

    /// Pickles by keyword arguments, so a `Pynisher` can travel to Dask or Ray
    /// workers.
    fn __getnewargs_ex__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, pyo3::types::PyDict>)> {
        let py = slf.py();
        let this = slf.get();
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("wall_time", this.wall_time())?;
        kwargs.set_item("cpu_time", this.cpu_time())?;
        kwargs.set_item("memory", this.memory())?;
        kwargs.set_item("memory_mode", this.memory_mode())?;
        kwargs.set_item("grace_period", this.grace_period())?;
        Ok((PyTuple::empty(py), kwargs))
    }

    fn __repr__(&self) -> String {
        format!(
            "Limits(wall_time={:?}, cpu_time={:?}, memory={:?}, memory_mode={:?}, grace_period={})",
            self.wall_time(),
            self.cpu_time(),
            self.memory(),
            self.memory_mode(),
            self.grace_period()
        )
    }
}

/// What one forked call did, as plain data for the Python layer.
#[pyclass(name = "RawOutcome", module = "pynisher._core", frozen, get_all)]
struct RawOutcome {
    status: &'static str,
    detail: String,
    exitcode: Option<i32>,
    signal: Option<i32>,
    signal_name: Option<String>,
    wall_time: f64,
    cpu_user: f64,
    cpu_system: f64,
    peak_memory: u64,
    /// "value", "error" or "memory" when the child sent a frame, else None.
    frame: Option<&'static str>,
    payload: Option<Py<PayloadPy>>,
    /// Whether the call had the caller's terminal (its foreground) while it
    /// ran: then Ctrl-C went to the call instead of the caller.
    terminal: bool,
}

/// The bytes of a result frame. A large payload stays in the memfd the
/// child wrote it into: `read` copies a range straight into a new `bytes`
/// (one kernel copy), and `claim` hands out a page-aligned range for the
/// caller to map privately and writably on its own without any copy (with
/// Python's `mmap`, whose buffer works on every Python version), so numpy
/// arrays in a result are built in place and each keeps only its own memory;
/// `release_range` frees the range's pages once its mapping is gone. Small
/// payloads are inline and only support `read`.
#[pyclass(name = "Payload", module = "pynisher._core", frozen)]
struct PayloadPy {
    payload: Payload,
    /// The `bytes` object a lent buffer was copied into when it arrived
    /// (a [`Payload::Lent`], whose head it follows).
    lent: Option<Py<PyBytes>>,
}

#[pymethods]
impl PayloadPy {
    fn __len__(&self) -> usize {
        self.payload.len()
    }

    /// Whether `map` works (the payload is in a memfd).
    #[getter]
    fn mappable(&self) -> bool {
        matches!(self.payload, Payload::Memfd { .. })
    }

    /// `length` bytes from `offset`, as `bytes`, or as a `bytearray` with
    /// `writable=True`.
    #[pyo3(signature = (offset, length, *, writable=false))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        offset: usize,
        length: usize,
        writable: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let (Payload::Lent { head, .. }, Some(bytes)) = (&self.payload, &self.lent) {
            if (head.len(), bytes.bind(py).len()?, writable) == (offset, length, false) {
                return Ok(bytes.bind(py).clone().into_any());
            }
        }
        let fill = |buf: &mut [u8]| {
            self.payload
                .read_at(offset, buf)
                .map_err(|e| PynisherException::new_err(format!("reading the result: {e}")))
        };
        if writable {
            return Ok(PyByteArray::new_with(py, length, fill)?.into_any());
        }
        // An uninitialised bytes object, filled by one `pread`: zeroing a
        // gigabyte first (as `PyBytes::new_with` does) would double the work.
        let (bytes, buf) = uninit_bytes(py, length)?;
        // A large copy runs without the GIL (other threads go on); nothing
        // else can see the object yet.
        py.detach(|| fill(buf))?;
        Ok(bytes.into_any())
    }

    /// Hands out `length` bytes from `offset` (a multiple of the page
    /// size; no two ranges may share a page) and returns a new descriptor of
    /// the memfd, which the caller owns: it maps the range itself and, once
    /// the mapping is gone, passes the descriptor to `release_range`.
    fn claim(&self, offset: usize, length: usize) -> PyResult<i32> {
        let memfd = self
            .payload
            .claim(offset, length)
            .map_err(|e| PynisherException::new_err(format!("mapping the result: {e}")))?
            .ok_or_else(|| {
                PyValueError::new_err("an inline payload cannot be mapped; use read()")
            })?;
        Ok(memfd.into_raw_fd())
    }
}

/// A new `bytes` object of `length` bytes, not yet initialised, and its
/// bytes to fill. Nothing else can see the object until it is returned.
fn uninit_bytes(py: Python<'_>, length: usize) -> PyResult<(Bound<'_, PyBytes>, &mut [u8])> {
    let len = pyo3::ffi::Py_ssize_t::try_from(length)
        .map_err(|_| PyValueError::new_err("length: too large"))?;
    // SAFETY: a NULL source asks CPython for an uninitialised buffer of
    // `len` bytes; the result is checked for NULL (an error is set then).
    let raw = unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len) };
    // SAFETY: `raw` is a new reference or NULL with an exception set.
    let bytes = unsafe { Bound::from_owned_ptr_or_err(py, raw)? }.cast_into::<PyBytes>()?;
    // SAFETY: the object was just created with `length` writable bytes that
    // nobody else can see yet; they live as long as the object, which the
    // caller keeps while it writes them.
    let buf = unsafe {
        std::slice::from_raw_parts_mut(pyo3::ffi::PyBytes_AsString(raw).cast::<u8>(), length)
    };
    Ok((bytes, buf))
}

/// Where the supervisor copies a `bytes` result that the child lent: a
/// fresh `bytes` object, made on the supervisor's thread (it takes the GIL
/// for that moment only; the copy itself runs without it).
#[derive(Default, Clone)]
struct LentBytes(std::sync::Arc<std::sync::Mutex<Option<Py<PyBytes>>>>);

impl LentBytes {
    fn take(&self) -> Option<Py<PyBytes>> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.take()
    }
}

impl pynisher::channel::LentSink for LentBytes {
    fn buffer(&mut self, len: usize) -> Option<&mut [u8]> {
        let made = Python::attach(|py| {
            let (bytes, buf) = uninit_bytes(py, len).ok()?;
            Some((bytes.unbind(), buf.as_mut_ptr() as usize))
        });
        let (bytes, address) = made?;
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        // SAFETY: the object, kept in the slot until `discard` or `take`,
        // owns these `len` bytes, and nothing else sees it before the call
        // returns; the supervisor fills them before that.
        Some(unsafe { std::slice::from_raw_parts_mut(address as *mut u8, len) })
    }

    fn discard(&mut self) {
        if let Some(bytes) = self.take() {
            Python::attach(|_| drop(bytes));
        }
    }
}

/// From this size on, a result's memfd is freed on a thread of its own.
const FREE_BESIDE: usize = 64 << 20;

impl Drop for PayloadPy {
    fn drop(&mut self) {
        // What no mapping shows (the pickle, small buffers copied out) is
        // freed now rather than when the last mapping of the memfd goes.
        let payload = std::mem::replace(&mut self.payload, Payload::Inline(Vec::new()));
        if !matches!(payload, Payload::Memfd { .. }) || payload.len() < FREE_BESIDE {
            let _ = payload.discard_unmapped();
            return;
        }
        // Freeing a gigabyte of it takes about 0.1 s, which neither the
        // call's return nor the GIL should wait for. The thread lives only
        // that long (Python 3.12+ warns when os.fork meets a thread).
        let (hand, take) = std::sync::mpsc::channel::<Payload>();
        let freer = std::thread::Builder::new()
            .name("pynisher-free".into())
            .spawn(move || {
                if let Ok(payload) = take.recv() {
                    let _ = payload.discard_unmapped();
                }
            });
        let payload = match freer {
            Ok(_) => match hand.send(payload) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(payload)) => payload,
            },
            Err(_) => payload,
        };
        let _ = payload.discard_unmapped();
    }
}

/// Frees the memfd pages of a range `Payload.claim` handed out, and closes
/// the descriptor it returned: called once nothing maps the range any more.
#[pyfunction]
fn release_range(memfd: i32, offset: u64, length: usize) -> PyResult<()> {
    // SAFETY: `memfd` is the descriptor `Payload.claim` returned, owned by
    // the caller, which hands it over here exactly once.
    let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
    pynisher::channel::release_range(memfd.as_fd(), offset, length)
        .map_err(|e| PynisherException::new_err(format!("freeing a result buffer: {e}")))
}

/// Frame tags as the Python child names them.
const FRAME_TAGS: [(&str, Tag); 3] = [
    ("value", Tag::Value),
    ("error", Tag::Error),
    ("memory", Tag::OutOfMemory),
];

/// Runs `PyOS_BeforeFork` and friends around the fork, exactly as `os.fork`.
struct PythonForkHooks;

impl ForkHooks for PythonForkHooks {
    fn before(&self) {
        // SAFETY: called with the GIL held, as CPython requires.
        unsafe { pyo3::ffi::PyOS_BeforeFork() }
    }
    fn after_parent(&self) {
        // SAFETY: called with the GIL held, right after fork in the parent.
        unsafe { pyo3::ffi::PyOS_AfterFork_Parent() }
    }
    fn after_child(&self) {
        // SAFETY: called with the GIL held, in the child after fork.
        unsafe { pyo3::ffi::PyOS_AfterFork_Child() }
    }
}

/// Parses a frame tag named by the Python child.
fn frame_tag(name: &str) -> PyResult<Tag> {
    FRAME_TAGS
        .iter()
        .find(|(tag_name, _)| *tag_name == name)
        .map(|(_, tag)| *tag)
        .ok_or_else(|| PyValueError::new_err(format!("unknown frame tag {name:?}")))
}

/// Sends `parts` (bytes-like objects) as one frame, without copying them
/// first. With `lend`, the last part is lent rather than copied (see
/// `pynisher::channel`): this returns once the supervisor has read it.
fn send_parts(
    sender: &mut Sender,
    tag: Tag,
    parts: &[Bound<'_, PyAny>],
    lend: bool,
) -> PyResult<()> {
    let buffers = parts
        .iter()
        .map(buffer::ContiguousBytes::get)
        .collect::<PyResult<Vec<_>>>()?;
    let slices: Vec<&[u8]> = buffers
        .iter()
        .map(buffer::ContiguousBytes::as_slice)
        .collect();
    let failed = |e: std::io::Error| PynisherException::new_err(format!("sending the result: {e}"));
    if let Some((last, head)) = slices.split_last().filter(|_| lend) {
        match sender.send_lent(tag, head, last) {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {}
            sent => return sent.map_err(failed),
        }
    }
    sender.send(tag, &slices).map_err(failed)
}

/// In the child: calls `body()`, which returns `(tag, parts, lend)`, and
/// sends the parts as one frame (see `send_parts`). `body` catches
/// everything itself; if it still fails, no frame is sent and the call is
/// reported as crashed.
fn run_body(py: Python<'_>, body: &Py<PyAny>, sender: &mut Sender) {
    let sent = (|| -> PyResult<()> {
        let reply = body.call0(py)?;
        let (tag, parts, lend): (String, Vec<Bound<'_, PyAny>>, bool) = reply.extract(py)?;
        send_parts(sender, frame_tag(&tag)?, &parts, lend)
    })();
    if let Err(err) = sent {
        err.print(py);
    }
}

/// Forks, runs `body` in the child under `limits`, and supervises the child
/// with the GIL released. Ctrl-C (any pending Python signal) kills the tree
/// and raises in the caller.
#[pyfunction]
#[pyo3(signature = (body, limits, *, name=None, terminate_child_processes=true, forceful_keyboard_interrupt=true, cancel=None))]
fn run_fork(
    py: Python<'_>,
    body: Py<PyAny>,
    limits: &LimitsPy,
    name: Option<String>,
    terminate_child_processes: bool,
    forceful_keyboard_interrupt: bool,
    cancel: Option<Py<PyAny>>,
) -> PyResult<RawOutcome> {
    let options = CallOptions {
        name,
        terminate_descendants: terminate_child_processes,
    };
    // The fork happens here, with the GIL held, as `os.fork` does it.
    // SAFETY: the child only runs Python code after PyOS_AfterFork_Child, the
    // same contract as `os.fork`.
    let running = unsafe {
        pynisher::fork_with(&limits.0, &options, &PythonForkHooks, |sender| {
            run_body(py, &body, sender)
        })
    }
    .map_err(to_py_err)?;
    supervise_running(py, running, forceful_keyboard_interrupt, cancel)
}

/// Starts a fresh interpreter with `argv`, hands it the call's file
/// `call_file` (the request, at descriptor `REQUEST_FD`) and the result
/// channel, and supervises it with the GIL released. The interpreter applies
/// the limits itself after start-up.
#[pyfunction]
#[pyo3(signature = (call_file, limits, *, argv, name=None, terminate_child_processes=true, forceful_keyboard_interrupt=true, cancel=None))]
// The arguments are the Python function's keyword arguments, one for one.
#[allow(clippy::too_many_arguments)]
fn run_spawn(
    py: Python<'_>,
    call_file: i32,
    limits: &LimitsPy,
    argv: Vec<String>,
    name: Option<String>,
    terminate_child_processes: bool,
    forceful_keyboard_interrupt: bool,
    cancel: Option<Py<PyAny>>,
) -> PyResult<RawOutcome> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| PyValueError::new_err("argv: empty"))?;
    let program = Program::new(program, args)
        .map_err(to_py_err)?
        .pass_fd(call_file, REQUEST_FD);
    let options = CallOptions {
        name,
        terminate_descendants: terminate_child_processes,
    };
    let running =
        pynisher::exec::start_interpreter(program, &limits.0, &options).map_err(to_py_err)?;
    supervise_running(py, running, forceful_keyboard_interrupt, cancel)
}

/// A running forkserver; dropping it kills the server.
#[pyclass(name = "ForkServer", module = "pynisher._core", frozen)]
struct ForkServerPy(ForkServer);

#[pymethods]
impl ForkServerPy {
    /// Starts a forkserver running `argv`; `imports_fd`, if given, is
    /// passed to it as descriptor `FORKSERVER_IMPORTS_FD`.
    #[staticmethod]
    #[pyo3(signature = (argv, imports_fd=None))]
    fn start(argv: Vec<String>, imports_fd: Option<i32>) -> PyResult<Self> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| PyValueError::new_err("argv: empty"))?;
        let mut program = Program::new(program, args).map_err(to_py_err)?;
        if let Some(fd) = imports_fd {
            program = program.pass_fd(fd, FORKSERVER_IMPORTS_FD);
        }
        ForkServer::start(program)
            .map(ForkServerPy)
            .map_err(to_py_err)
    }

    #[getter]
    fn pid(&self) -> i32 {
        self.0.pid()
    }

    fn is_alive(&self) -> bool {
        self.0.is_alive()
    }
}

/// Runs one call in a child of `server` and supervises it with the GIL
/// released. Raises `ForkServerError` if the server is gone before the call
/// started (it is then safe to retry with a new server).
///
/// As [`supervise_running`] does for a call already running, this thread
/// (GIL released) waits for the server to start the call and supervises it
/// until the first check of signals and `cancel` is due; a call not over by
/// then goes on on a thread of its own, from wherever it got to (the
/// server may still be importing its preload modules).
#[pyfunction]
#[pyo3(signature = (server, call_file, limits, *, terminate_child_processes=true, forceful_keyboard_interrupt=true, cancel=None))]
fn run_forkserver(
    py: Python<'_>,
    server: &ForkServerPy,
    call_file: i32,
    limits: &LimitsPy,
    terminate_child_processes: bool,
    forceful_keyboard_interrupt: bool,
    cancel: Option<Py<PyAny>>,
) -> PyResult<RawOutcome> {
    // SAFETY: the caller keeps `call_file` open for the whole call; it is
    // only used to pass it to the server, before this function returns.
    let call_file = unsafe { std::os::fd::BorrowedFd::borrow_raw(call_file) };
    let (server, limits) = (&server.0, &limits.0);
    let lent_bytes = LentBytes::default();
    let first = py.detach(|| {
        let first_check = Instant::now() + pynisher::supervisor::CHECK_INTERVAL;
        let started = server
            .send_call(call_file, limits, terminate_child_processes)
            .and_then(|pending| pending.wait(None, Some(first_check)));
        let lent = lent_bytes.clone();
        match started {
            Err(err) => FirstWait::Ended(Err(err)),
            Ok(Starting::Waiting(pending)) => {
                FirstWait::Beside(pynisher::Beside::start(move |interrupt| {
                    let start = pending.wait_to_start(Some(interrupt));
                    supervise_started(start, interrupt, forceful_keyboard_interrupt, &lent)
                }))
            }
            Ok(Starting::Started(CallStart::NotStarted(finished))) => {
                FirstWait::Ended(Ok((finished, false)))
            }
            Ok(Starting::Started(CallStart::Running(mut running))) => {
                take_charge(&mut running, forceful_keyboard_interrupt, &lent_bytes);
                let terminal = Terminal::foreground().filter(|t| t.hand_over(running.pid()));
                match running.wait_until(first_check) {
                    Ok(ended) => FirstWait::Ended(ended.map(|f| (f, terminal.is_some()))),
                    Err(paused) => FirstWait::Beside(pynisher::Beside::start(move |interrupt| {
                        let finished = paused.wait_interruptible(interrupt);
                        // The terminal goes back when the call has ended.
                        let lent = terminal.is_some();
                        drop(terminal);
                        finished.map(|finished| (finished, lent))
                    })),
                }
            }
        }
    });
    let (finished, terminal) = first.conclude(py, cancel.as_ref())?;
    raw_outcome(py, finished, terminal, &lent_bytes)
}

/// Supervises a forkserver call that the server has started (or failed
/// to), on the supervisor's thread, to its end or until `interrupt`; the
/// call gets the terminal meanwhile if the caller has it. Returns whether
/// it had it.
fn supervise_started(
    start: pynisher::Result<CallStart>,
    interrupt: &pynisher::Interrupt,
    forceful_keyboard_interrupt: bool,
    lent_bytes: &LentBytes,
) -> Result<(pynisher::Finished, bool), Stop<()>> {
    let mut running = match start.map_err(Stop::Failed)? {
        CallStart::Running(running) => running,
        CallStart::NotStarted(finished) => return Ok((finished, false)),
    };
    take_charge(&mut running, forceful_keyboard_interrupt, lent_bytes);
    let terminal = Terminal::foreground().filter(|t| t.hand_over(running.pid()));
    let finished = running.wait_interruptible(interrupt);
    let lent = terminal.is_some();
    drop(terminal);
    finished.map(|finished| (finished, lent))
}

/// The forkserver's main loop: forks a child per call, which runs
/// `child_main(request_fd, result_fd, memfd, page_fd)`. Returns when the
/// caller (`caller`, the server's parent) closes the control socket or exits.
#[pyfunction]
fn forkserver_serve(
    py: Python<'_>,
    control_fd: i32,
    caller: i32,
    child_main: Py<PyAny>,
) -> PyResult<()> {
    // SAFETY: the descriptor was passed to this process for exactly this use
    // and nothing else owns it.
    let control = unsafe { std::os::fd::OwnedFd::from_raw_fd(control_fd) };
    // SAFETY: the server is a single-threaded interpreter; children only run
    // Python after PyOS_AfterFork_Child, as with os.fork.
    unsafe {
        // The child's step 1 is taken; `child_split` proves it again by its
        // effects, as the type cannot follow into Python.
        pynisher::forkserver::serve(control, caller, &PythonForkHooks, |call, _early| {
            let fds = (call.request, call.result, call.memfd, call.page);
            if let Err(err) = child_main.call1(py, fds) {
                err.print(py);
            }
        })
    }
    .map_err(to_py_err)
}

/// Why the cgroup v2 backend of the resident memory mode cannot be used
/// here, or None if it can.
#[pyfunction]
fn cgroup_v2_unavailable() -> Option<String> {
    pynisher::cgroup::delegated().err()
}

/// Supervises a call already running (a fork, a fresh interpreter) with
/// the GIL released, and converts the outcome.
///
/// Until the first check of Python's signals and `cancel` is due (50 ms),
/// this thread supervises the call itself, GIL released; a short call so
/// needs no other thread. A call that runs longer is handed, still without
/// the GIL, to a supervisor thread of its own, so that no lock of the
/// caller (the GIL above all: another thread may hold it for seconds) can
/// delay a kill. This thread then waits for it with the GIL released and,
/// every 50 ms, takes the GIL to check signals and `cancel`; if another
/// thread holds the GIL meanwhile, only this check (and so the return)
/// waits. The supervisor takes the GIL once, after the result has arrived,
/// if the child lends a `bytes` result: to make the object it copies it
/// into.
///
/// `cancel`, if given, is polled with `cancel.is_set()` on the same tick as
/// the signals; once it is set the tree is killed and
/// `concurrent.futures.CancelledError` raised. A failed check kills the tree,
/// and its error is raised only once nothing of the call is left.
fn supervise_running(
    py: Python<'_>,
    mut running: pynisher::Supervised,
    forceful_keyboard_interrupt: bool,
    cancel: Option<Py<PyAny>>,
) -> PyResult<RawOutcome> {
    let lent_bytes = LentBytes::default();
    take_charge(&mut running, forceful_keyboard_interrupt, &lent_bytes);
    let terminal = Terminal::foreground().filter(|t| t.hand_over(running.pid()));
    // The hand-over to the supervisor's thread happens before the GIL is
    // taken again: another thread may hold the GIL for seconds, and the
    // limits must hold meanwhile.
    let first = py.detach(|| match running.wait_until_first_check() {
        Ok(ended) => FirstWait::Ended(ended),
        Err(paused) => FirstWait::Beside(pynisher::Beside::start(move |interrupt| {
            paused.wait_interruptible(interrupt)
        })),
    });
    let finished = first.conclude(py, cancel.as_ref());
    let lent_terminal = terminal.is_some();
    drop(terminal);
    raw_outcome(py, finished?, lent_terminal, &lent_bytes)
}

/// How the first wait of a call (on the calling thread, GIL released)
/// ended: with the call, or with its supervision handed to a thread of its
/// own (or failing to start one).
enum FirstWait<T> {
    Ended(pynisher::Result<T>),
    Beside(pynisher::Result<pynisher::Beside<T>>),
}

impl<T: Send + 'static> FirstWait<T> {
    /// The call's end: at once, or once the supervisor's thread has it,
    /// checking signals and `cancel` every 50 ms meanwhile.
    fn conclude(self, py: Python<'_>, cancel: Option<&Py<PyAny>>) -> PyResult<T> {
        match self {
            FirstWait::Ended(ended) => ended.map_err(to_py_err),
            FirstWait::Beside(Err(err)) => Err(to_py_err(err)),
            FirstWait::Beside(Ok(beside)) => beside
                .wait(pause_without_gil(py), python_check(py, cancel))
                .map_err(stop_to_py_err),
        }
    }
}

/// The binding's settings of a call under supervision: without the
/// forceful option the tree first gets SIGINT, as a terminal's Ctrl-C would
/// deliver, and the grace period to act on it; a lent `bytes` result goes to
/// `lent_bytes`. (A caller in the foreground of a terminal also lends it to
/// the call, so that `input()` works there, and takes it back when it ends.)
fn take_charge(
    running: &mut pynisher::Supervised,
    forceful_keyboard_interrupt: bool,
    lent_bytes: &LentBytes,
) {
    running.set_interrupt_signal((!forceful_keyboard_interrupt).then_some(libc::SIGINT));
    running.lend_into(Box::new(lent_bytes.clone()));
}

/// How the calling thread waits for the supervisor's thread: with the GIL
/// released, up to the next check.
fn pause_without_gil(py: Python<'_>) -> impl FnMut(pynisher::Wait<'_>) -> bool + '_ {
    move |wait: pynisher::Wait<'_>| py.detach(|| wait(Some(pynisher::supervisor::CHECK_INTERVAL)))
}

/// The check between two waits: Python's signals (Ctrl-C), then `cancel`.
fn python_check<'a>(
    py: Python<'a>,
    cancel: Option<&'a Py<PyAny>>,
) -> impl FnMut() -> PyResult<()> + 'a {
    move || {
        py.check_signals()?;
        if let Some(cancel) = cancel {
            if cancel.call_method0(py, "is_set")?.is_truthy(py)? {
                let cancelled = py.import("concurrent.futures")?.getattr("CancelledError")?;
                let message = "the call was cancelled; its process tree was killed";
                return Err(PyErr::from_value(cancelled.call1((message,))?));
            }
        }
        Ok(())
    }
}

fn stop_to_py_err(stop: Stop<PyErr>) -> PyErr {
    match stop {
        Stop::Interrupted(err) => err,
        Stop::Failed(err) => to_py_err(err),
    }
}

/// The outcome as `_api` reads it.
fn raw_outcome(
    py: Python<'_>,
    finished: pynisher::Finished,
    terminal: bool,
    lent_bytes: &LentBytes,
) -> PyResult<RawOutcome> {
    let outcome = finished.outcome;
    let (frame, payload) = match finished.frame {
        Some(frame) => (
            FRAME_TAGS
                .iter()
                .find(|(_, t)| *t == frame.tag)
                .map(|(name, _)| *name),
            Some(Py::new(
                py,
                PayloadPy {
                    lent: match &frame.payload {
                        Payload::Lent { .. } => lent_bytes.take(),
                        _ => None,
                    },
                    payload: frame.payload,
                },
            )?),
        ),
        None => (None, None),
    };
    Ok(RawOutcome {
        status: outcome.status.as_str(),
        detail: outcome.detail,
        exitcode: outcome.exit.and_then(|e| e.code()),
        signal: outcome.exit.and_then(|e| e.signal()),
        signal_name: outcome
            .exit
            .and_then(|e| e.signal())
            .map(pynisher::sys::signal_name),
        wall_time: outcome.usage.wall_time.as_secs_f64(),
        cpu_user: outcome.usage.cpu_user.as_secs_f64(),
        cpu_system: outcome.usage.cpu_system.as_secs_f64(),
        peak_memory: outcome.usage.peak_memory,
        frame,
        payload,
        terminal,
    })
}

/// The child's end of the result channel, for a fresh interpreter started by
/// `run_spawn` (or a forkserver child).
#[pyclass(name = "ChildChannel", module = "pynisher._core")]
struct ChildChannel(Sender);

#[pymethods]
impl ChildChannel {
    #[new]
    #[pyo3(signature = (result_fd=INTERPRETER_RESULT_FD, memfd=INTERPRETER_MEMFD))]
    fn new(result_fd: i32, memfd: i32) -> Self {
        ChildChannel(Sender::new(result_fd, memfd))
    }

    /// Announces that start-up is over; `user` and `system` are the CPU
    /// seconds it took, which are not charged to the call. Refused before
    /// `child_apply_limits`, and a second time.
    fn ready(&mut self, user: f64, system: f64) -> PyResult<()> {
        let secs = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or_default();
        child_steps("ready", |steps| {
            steps.ready(&mut self.0, secs(user), secs(system))
        })
    }

    /// Sends the one result frame: `tag` is "value", "error" or "memory".
    /// With `lend`, a large last part is lent, not copied (see `send_parts`).
    #[pyo3(signature = (tag, parts, lend=false))]
    fn send(&mut self, tag: &str, parts: Vec<Bound<'_, PyAny>>, lend: bool) -> PyResult<()> {
        send_parts(&mut self.0, frame_tag(tag)?, &parts, lend)
    }

    /// Whether the result frame has been sent.
    #[getter]
    fn sent(&self) -> bool {
        self.0.has_sent()
    }
}

/// The steps this process has taken as a call's process (see
/// `pynisher::child::CallProcess`): the order is checked in the core.
static CHILD_STEPS: std::sync::Mutex<CheckedSteps> = std::sync::Mutex::new(CheckedSteps::new());

/// Takes one step of a call's process, raising `PynisherException` (named
/// after `function`) if it is out of order or fails.
fn child_steps<T>(
    function: &str,
    step: impl FnOnce(&mut CheckedSteps) -> Result<T, StepError>,
) -> PyResult<T> {
    let mut steps = CHILD_STEPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    step(&mut steps).map_err(|err| PynisherException::new_err(format!("{function}: {err}")))
}

/// In a fresh interpreter (or a forkserver child) that has read its call:
/// splits off the call's guardian, which stays behind as the parent of the
/// call's tree, watches `parent` and reports on the call's page `page_fd`.
/// Returns in the process that runs the call; the guardian never returns.
///
/// The split is only safe in a call's own process, so it is refused (with
/// `PynisherException`) anywhere else: the process must have a single
/// thread, lead its own process group, be a child subreaper and a child of
/// `parent`, as `pynisher` makes a call's process before it runs Python,
/// and must not have split before.
#[pyfunction]
fn child_split(parent: i32, terminate_child_processes: bool, page_fd: i32) -> PyResult<()> {
    child_steps("child_split", |steps| {
        steps.split_guardian(parent, terminate_child_processes, page_fd)
    })
}

/// In a call's process once the function is loaded: sets the process name
/// and the rlimits (RLIMIT_CPU, and RLIMIT_AS as the current size plus the
/// memory limit in address-space mode). Refused before `child_split`, and a
/// second time.
#[pyfunction]
#[pyo3(signature = (limits, name=None))]
fn child_apply_limits(limits: &LimitsPy, name: Option<&str>) -> PyResult<()> {
    let setup = ChildSetup::new(&limits.0, name);
    child_steps("child_apply_limits", |steps| steps.apply_limits(&setup))
}

/// Ends a call's process: tells its guardian whether the result was sent,
/// and `_exit`s. Never returns; refused before `child_split`.
#[pyfunction]
fn child_exit(py: Python<'_>, sent: bool) -> PyResult<()> {
    // Flushing happens in Python before this; nothing else may run after it.
    let _ = py;
    child_steps("child_exit", |steps| steps.finish(sent)).map(|never| match never {})
}

/// Runs the `pynisher` command line with `argv` (the first item is the
/// program name) and returns its exit status: the `pynisher` script that
/// pip installs. The logic is the CLI crate's, shared with the binary.
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<std::ffi::OsString>) -> u8 {
    py.detach(|| pynisher_cli::main(argv))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LimitsPy>()?;
    m.add_class::<RawOutcome>()?;
    m.add_class::<ChildChannel>()?;
    m.add_class::<PayloadPy>()?;
    m.add_class::<ForkServerPy>()?;
    m.add_function(wrap_pyfunction!(run_forkserver, m)?)?;
    m.add_function(wrap_pyfunction!(cgroup_v2_unavailable, m)?)?;
    m.add_function(wrap_pyfunction!(release_range, m)?)?;
    m.add_function(wrap_pyfunction!(forkserver_serve, m)?)?;
    m.add("FORKSERVER_CONTROL_FD", pynisher::forkserver::CONTROL_FD)?;
    m.add("FORKSERVER_IMPORTS_FD", FORKSERVER_IMPORTS_FD)?;
    m.add_function(wrap_pyfunction!(run_fork, m)?)?;
    m.add_function(wrap_pyfunction!(run_spawn, m)?)?;
    m.add_function(wrap_pyfunction!(child_apply_limits, m)?)?;
    m.add_function(wrap_pyfunction!(child_exit, m)?)?;
    m.add_function(wrap_pyfunction!(child_split, m)?)?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add("REQUEST_FD", REQUEST_FD)?;
    m.add("REPORT_FD", pynisher::exec::INTERPRETER_REPORT_FD)?;
    let statuses: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
    m.add("STATUSES", statuses)?;
    let modes: Vec<&str> = MemoryMode::ALL.iter().map(|m| m.as_str()).collect();
    m.add("MEMORY_MODES", modes)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
