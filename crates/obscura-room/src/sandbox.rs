//! The sandbox a clean-room function runs in: WebAssembly compiled by Wasmtime (Cranelift), with
//! no WASI (no files, network, clock or randomness), only the host calls below, fuel for every
//! instruction and every byte a host call copies, a memory limit, and an output limit.
//!
//! # The function's interface
//!
//! A module exports its linear memory as `memory` and a function `run: () -> i32` (0 when it
//! succeeded, any other value is its own error code). It may import only these functions from
//! the module `obscura`; anything else is refused before it runs:
//!
//! | import | type | does |
//! |---|---|---|
//! | `inputs` | `() -> i32` | how many input images |
//! | `width`, `height` | `(i32) -> i32` | input `i`'s size in pixels, −1 if none |
//! | `label` | `(i32) -> i32` | input `i`'s label index in the manifest, −1 if it has none |
//! | `pixels` | `(i32 i, i32 ptr) -> i32` | copies input `i`'s RGB8 pixels (width × height × 3 bytes, row by row) to `ptr`; returns the count |
//! | `params_len` | `() -> i32` | the parameters' length |
//! | `params` | `(i32 ptr) -> i32` | copies the parameters to `ptr`; returns the count |
//! | `output` | `(i32 ptr, i32 len) -> ()` | appends `len` bytes at `ptr` to the output |
//!
//! A copy out of bounds, an output past the manifest's maximum, fuel run out, memory asked
//! past the limit and a run past its deadline (a second per 20 million fuel, at least two: a
//! bound on time whatever fuel does or does not count) each stop the run with their own
//! [`RunError`]; the sandbox and the process around it go on.

use wasmtime::{
    Caller, Config, Engine, ExternType, Instance, Linker, Module, ResourceLimiter, Store, Trap,
};

use crate::work::{Manifest, OutputKind, Work};
use crate::RoomError;

/// Why a run stopped without an output.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunError {
    /// The module does not compile, or lacks `memory` or `run`.
    #[error("the module is not a clean-room function: {0}")]
    Module(String),
    /// The module imports something it may not have.
    #[error("the function imports {0}, which a clean-room function may not have (only obscura.inputs, width, height, label, pixels, params_len, params and output)")]
    Import(String),
    /// It used all its fuel.
    #[error("the function ran out of fuel (its manifest gives it {0})")]
    Fuel(u64),
    /// It asked for more memory than its limit.
    #[error("the function asked for {asked} bytes of memory; its manifest allows {limit}")]
    Memory {
        /// What it asked for.
        asked: u64,
        /// The manifest's limit.
        limit: u64,
    },
    /// It wrote more output than allowed.
    #[error("the function wrote more than its manifest's {0} bytes of output")]
    Output(u32),
    /// Its output is not of the kind its manifest says.
    #[error("the function's output is not {kind:?}: {why}")]
    Kind {
        /// The manifest's kind.
        kind: OutputKind,
        /// What is wrong.
        why: String,
    },
    /// It returned an error code of its own.
    #[error("the function failed with its own code {0}")]
    Failed(i32),
    /// It trapped (out-of-bounds access, unreachable, stack exhausted …).
    #[error("the function trapped: {0}")]
    Trap(String),
    /// It ran past its deadline: fuel bounds what the function does, the deadline the time it
    /// takes, whatever fuel does not count.
    #[error("the function ran past its {0} s deadline")]
    Time(u64),
}

impl RunError {
    /// The reason as the controller may hear it: which limit stopped the function, without
    /// the values a function chooses (its error code, the memory it asked for, what its output
    /// held), which would carry its data past its recipients.
    pub fn public(&self) -> String {
        match self {
            RunError::Module(_) | RunError::Import(_) | RunError::Fuel(_) | RunError::Output(_) => {
                self.to_string()
            }
            RunError::Time(_) => self.to_string(),
            RunError::Memory { limit, .. } => {
                format!("the function asked for more than its manifest's {limit} bytes of memory")
            }
            RunError::Kind { kind, .. } => format!("the function's output is not {kind:?}"),
            RunError::Failed(_) => "the function failed with an error code of its own".into(),
            RunError::Trap(_) => "the function trapped".into(),
        }
    }
}

/// The imports a function may have.
const ALLOWED: [&str; 8] = [
    "inputs",
    "width",
    "height",
    "label",
    "pixels",
    "params_len",
    "params",
    "output",
];

/// One input image, decoded.
#[derive(Clone)]
pub struct Input {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Input({}×{}, <pixels>)", self.width, self.height)
    }
}

/// The most pixels an input may have once decoded (50 MB of RGB).
pub const MAX_PIXELS: u64 = 4096 * 4096;

impl Input {
    /// An image from its encoded bytes (JPEG, PNG, WebP, GIF), as RGB8.
    ///
    /// # Errors
    ///
    /// [`RoomError::Image`] if it does not decode, or is larger than [`MAX_PIXELS`]: the
    /// decoder is given the limit, so a small file claiming a huge size allocates nothing.
    pub fn decode(bytes: &[u8]) -> Result<Input, RoomError> {
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| RoomError::Image(e.to_string()))?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(4096);
        limits.max_image_height = Some(4096);
        limits.max_alloc = Some(MAX_PIXELS * 4 + (16 << 20));
        reader.limits(limits);
        let image = reader
            .decode()
            .map_err(|e| RoomError::Image(e.to_string()))?
            .into_rgb8();
        Ok(Input {
            width: image.width(),
            height: image.height(),
            rgb: image.into_raw(),
        })
    }

    /// An image from its RGB8 pixels.
    ///
    /// # Errors
    ///
    /// [`RoomError::Image`] if the size does not match, or is past [`MAX_PIXELS`].
    pub fn from_rgb(width: u32, height: u32, rgb: Vec<u8>) -> Result<Input, RoomError> {
        let pixels = u64::from(width) * u64::from(height);
        if pixels > MAX_PIXELS || rgb.len() as u64 != pixels * 3 {
            return Err(RoomError::Image(format!(
                "{width}×{height} RGB is {} bytes, not {}",
                pixels * 3,
                rgb.len()
            )));
        }
        Ok(Input { width, height, rgb })
    }

    /// Its width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Its height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }
}

/// A compiled function whose imports and exports were checked.
pub struct Function {
    module: Module,
}

/// What a run gave.
#[derive(Debug)]
pub struct Ran {
    /// The output, checked against the manifest's kind (an image as its raw pixels).
    pub output: Vec<u8>,
    /// The fuel it used.
    pub fuel_used: u64,
}

/// Host-copy fuel: one unit per this many bytes, so a loop of copies pays for what it moves.
const BYTES_PER_FUEL: u64 = 8;

/// The compiler and runtime, made once and shared by every run, with the clock that ends runs
/// past their deadline.
pub struct Sandbox {
    engine: Engine,
    /// Fuel a run may burn per second of its deadline.
    fuel_per_second: u64,
    /// Stops the epoch ticker when the sandbox goes.
    ticking: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How often the epoch moves.
const TICK: std::time::Duration = std::time::Duration::from_millis(10);
/// A run's deadline: a second per this much fuel, and never less than [`MIN_DEADLINE_S`].
pub const FUEL_PER_SECOND: u64 = 20_000_000;
const MIN_DEADLINE_S: u64 = 2;

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticking
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The deadline of a run given `fuel`, in seconds, at `fuel_per_second`.
pub fn deadline_s(fuel: u64, fuel_per_second: u64) -> u64 {
    (fuel / fuel_per_second.max(1)).max(MIN_DEADLINE_S)
}

struct State {
    inputs: Vec<Input>,
    labels: Vec<Option<u16>>,
    parameters: Vec<u8>,
    output: Vec<u8>,
    max_output: u32,
    limits: Limiter,
}

struct Limiter {
    /// The limit, memory and tables together.
    memory: u64,
    /// What memory and tables hold now.
    used: u64,
    /// What the function asked for when it was refused, to say so.
    refused: Option<u64>,
}

/// The error a host call or the limiter raises, told apart from the function's own traps.
#[derive(Debug)]
enum Stop {
    Memory(u64),
    Output,
    Fuel,
    Copy(&'static str),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Stop {}

impl Limiter {
    /// Allow a growth by `more` bytes only if memory and tables together stay within the limit.
    fn grow(&mut self, more: u64) -> wasmtime::Result<bool> {
        let total = self.used.saturating_add(more);
        if total > self.memory {
            self.refused = Some(total);
            return Err(wasmtime::Error::new(Stop::Memory(total)));
        }
        self.used = total;
        Ok(true)
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow((desired as u64).saturating_sub(current as u64))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A table's element is a pointer: count it against the same limit as memory.
        self.grow(
            (desired as u64)
                .saturating_sub(current as u64)
                .saturating_mul(8),
        )
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}

impl Sandbox {
    /// A sandbox: fuel metering and a deadline per run (threads are not built in), a 512 KiB
    /// WebAssembly stack.
    ///
    /// # Errors
    ///
    /// [`RoomError::Engine`] if Wasmtime cannot start on this machine.
    pub fn new() -> Result<Sandbox, RoomError> {
        Sandbox::with_deadline(FUEL_PER_SECOND)
    }

    /// A sandbox whose runs' deadlines allow `fuel_per_second` (the default, 20 million, is
    /// slower than any machine this runs on, so fuel ends a run first; a higher rate makes the
    /// deadline come first).
    ///
    /// # Errors
    /// As [`Sandbox::new`].
    pub fn with_deadline(fuel_per_second: u64) -> Result<Sandbox, RoomError> {
        let mut config = Config::new();
        config.consume_fuel(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(512 << 10);
        let engine = Engine::new(&config).map_err(|e| RoomError::Engine(e.to_string()))?;
        let ticking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (clock, on) = (engine.clone(), ticking.clone());
        std::thread::Builder::new()
            .name("room-epoch".into())
            .spawn(move || {
                while on.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    clock.increment_epoch();
                }
            })
            .map_err(|e| RoomError::Engine(e.to_string()))?;
        Ok(Sandbox {
            engine,
            fuel_per_second,
            ticking,
        })
    }

    /// Compile a work's module and check what it imports and exports.
    ///
    /// # Errors
    ///
    /// [`RunError::Module`] or [`RunError::Import`].
    pub fn compile(&self, work: &Work) -> Result<Function, RunError> {
        let module = Module::new(&self.engine, work.module())
            .map_err(|e| RunError::Module(format!("{e:#}")))?;
        for import in module.imports() {
            let allowed = import.module() == "obscura"
                && ALLOWED.contains(&import.name())
                && matches!(import.ty(), ExternType::Func(_));
            if !allowed {
                return Err(RunError::Import(format!(
                    "{}.{}",
                    import.module(),
                    import.name()
                )));
            }
        }
        if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
            return Err(RunError::Module(
                "it exports no memory named \"memory\"".into(),
            ));
        }
        if !matches!(module.get_export("run"), Some(ExternType::Func(_))) {
            return Err(RunError::Module(
                "it exports no function named \"run\"".into(),
            ));
        }
        Ok(Function { module })
    }

    /// Run a compiled function once on `inputs` (in the manifest's order), in a store of its
    /// own, and check its output.
    ///
    /// # Errors
    ///
    /// The [`RunError`] that stopped it.
    pub fn run(
        &self,
        function: &Function,
        manifest: &Manifest,
        inputs: Vec<Input>,
    ) -> Result<Ran, RunError> {
        if inputs.len() != manifest.inputs.len() {
            return Err(RunError::Module(format!(
                "{} inputs given for a manifest of {}",
                inputs.len(),
                manifest.inputs.len()
            )));
        }
        let state = State {
            inputs,
            labels: manifest.inputs.iter().map(|i| i.label).collect(),
            parameters: manifest.parameters.clone(),
            output: Vec::new(),
            max_output: manifest.output.max_bytes,
            limits: Limiter {
                memory: manifest.limits.memory_bytes,
                used: 0,
                refused: None,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let fuel = manifest.limits.fuel;
        store
            .set_fuel(fuel)
            .map_err(|e| RunError::Module(e.to_string()))?;
        let deadline = deadline_s(fuel, self.fuel_per_second);
        store.set_epoch_deadline(deadline * 1000 / TICK.as_millis() as u64);
        store.epoch_deadline_trap();
        let linker = self.linker().map_err(|e| RunError::Module(e.to_string()))?;
        let ran =
            linker
                .instantiate(&mut store, &function.module)
                .and_then(|instance: Instance| {
                    let run = instance.get_typed_func::<(), i32>(&mut store, "run")?;
                    run.call(&mut store, ())
                });
        let used = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let code = ran.map_err(|e| stopped(&e, &store, fuel, deadline))?;
        if code != 0 {
            return Err(RunError::Failed(code));
        }
        let state = store.into_data();
        let output = check_output(manifest.output.kind, state.output)?;
        Ok(Ran {
            output,
            fuel_used: used,
        })
    }

    fn linker(&self) -> wasmtime::Result<Linker<State>> {
        let mut linker = Linker::new(&self.engine);
        linker.func_wrap("obscura", "inputs", |c: Caller<'_, State>| {
            c.data().inputs.len() as i32
        })?;
        linker.func_wrap("obscura", "width", |c: Caller<'_, State>, i: i32| {
            input(c.data(), i).map_or(-1, |x| x.width as i32)
        })?;
        linker.func_wrap("obscura", "height", |c: Caller<'_, State>, i: i32| {
            input(c.data(), i).map_or(-1, |x| x.height as i32)
        })?;
        linker.func_wrap("obscura", "label", |c: Caller<'_, State>, i: i32| {
            usize::try_from(i)
                .ok()
                .and_then(|i| c.data().labels.get(i).copied().flatten())
                .map_or(-1, i32::from)
        })?;
        linker.func_wrap(
            "obscura",
            "pixels",
            |mut c: Caller<'_, State>, i: i32, ptr: i32| -> wasmtime::Result<i32> {
                let Some(len) = input(c.data(), i).map(|x| x.rgb.len()) else {
                    return Ok(-1);
                };
                copy_in(&mut c, ptr, len, "pixels", |s| {
                    &input(s, i).expect("checked").rgb
                })
            },
        )?;
        linker.func_wrap("obscura", "params_len", |c: Caller<'_, State>| {
            c.data().parameters.len() as i32
        })?;
        linker.func_wrap(
            "obscura",
            "params",
            |mut c: Caller<'_, State>, ptr: i32| -> wasmtime::Result<i32> {
                let len = c.data().parameters.len();
                copy_in(&mut c, ptr, len, "params", |s| &s.parameters)
            },
        )?;
        linker.func_wrap(
            "obscura",
            "output",
            |mut c: Caller<'_, State>, ptr: i32, len: i32| -> wasmtime::Result<()> {
                let len = u32::try_from(len).map_err(|_| Stop::Copy("output"))?;
                let state = c.data();
                if state.output.len() as u64 + u64::from(len) > u64::from(state.max_output) {
                    return Err(Stop::Output.into());
                }
                charge(&mut c, u64::from(len))?;
                let memory = memory(&mut c, "output")?;
                let start = u32::try_from(ptr).map_err(|_| Stop::Copy("output"))? as usize;
                let (data, state) = memory.data_and_store_mut(&mut c);
                let bytes = start
                    .checked_add(len as usize)
                    .and_then(|end| data.get(start..end))
                    .ok_or(Stop::Copy("output"))?;
                state.output.extend_from_slice(bytes);
                Ok(())
            },
        )?;
        Ok(linker)
    }
}

fn input(state: &State, i: i32) -> Option<&Input> {
    usize::try_from(i).ok().and_then(|i| state.inputs.get(i))
}

fn memory(c: &mut Caller<'_, State>, call: &'static str) -> Result<wasmtime::Memory, Stop> {
    c.get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or(Stop::Copy(call))
}

/// Take fuel for a host call that moves `bytes`.
fn charge(c: &mut Caller<'_, State>, bytes: u64) -> Result<(), Stop> {
    let cost = bytes / BYTES_PER_FUEL + 1;
    let left = c.get_fuel().map_err(|_| Stop::Fuel)?;
    if left < cost {
        let _ = c.set_fuel(0);
        return Err(Stop::Fuel);
    }
    c.set_fuel(left - cost).map_err(|_| Stop::Fuel)
}

/// Copy `len` bytes of the state (`from` picks them) into the function's memory at `ptr`.
fn copy_in(
    c: &mut Caller<'_, State>,
    ptr: i32,
    len: usize,
    call: &'static str,
    from: impl Fn(&State) -> &[u8],
) -> wasmtime::Result<i32> {
    charge(c, len as u64)?;
    let memory = memory(c, call)?;
    let start = u32::try_from(ptr).map_err(|_| Stop::Copy(call))? as usize;
    let (data, state) = memory.data_and_store_mut(&mut *c);
    let to = start
        .checked_add(len)
        .and_then(|end| data.get_mut(start..end))
        .ok_or(Stop::Copy(call))?;
    to.copy_from_slice(from(state));
    Ok(len as i32)
}

/// Map what stopped a run to its reason.
fn stopped(e: &wasmtime::Error, store: &Store<State>, fuel: u64, deadline: u64) -> RunError {
    if let Some(stop) = e.downcast_ref::<Stop>() {
        return match stop {
            Stop::Memory(asked) => RunError::Memory {
                asked: *asked,
                limit: store.data().limits.memory,
            },
            Stop::Output => RunError::Output(store.data().max_output),
            Stop::Fuel => RunError::Fuel(fuel),
            Stop::Copy(call) => RunError::Trap(format!(
                "obscura.{call} was given memory outside the function's own"
            )),
        };
    }
    if let Some(asked) = store.data().limits.refused {
        return RunError::Memory {
            asked,
            limit: store.data().limits.memory,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => RunError::Fuel(fuel),
        Some(Trap::Interrupt) => RunError::Time(deadline),
        Some(trap) => RunError::Trap(trap.to_string()),
        None => RunError::Trap(format!("{e:#}")),
    }
}

/// Check an output against its kind (an image is checked, and stays raw: see [`image_png`]).
///
/// # Errors
///
/// [`RunError::Kind`] saying what is wrong.
pub fn check_output(kind: OutputKind, output: Vec<u8>) -> Result<Vec<u8>, RunError> {
    let bad = |why: String| RunError::Kind { kind, why };
    match kind {
        OutputKind::Text => String::from_utf8(output)
            .map(String::into_bytes)
            .map_err(|e| bad(e.to_string())),
        OutputKind::Json => {
            serde_json::from_slice::<serde_json::Value>(&output).map_err(|e| bad(e.to_string()))?;
            Ok(output)
        }
        OutputKind::Image => {
            image_size(&output).map_err(bad)?;
            Ok(output)
        }
    }
}

/// The width and height of an image output (its 8-byte size, then RGB8 pixels).
///
/// # Errors
/// What is wrong with it.
pub fn image_size(output: &[u8]) -> Result<(u32, u32), String> {
    let head: [u8; 8] = output
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or("shorter than its 8-byte size")?;
    let width = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let height = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let want = u64::from(width) * u64::from(height) * 3 + 8;
    if width == 0 || height == 0 || output.len() as u64 != want {
        return Err(format!(
            "{width}×{height} RGB needs {want} bytes with its size, not {}",
            output.len()
        ));
    }
    Ok((width, height))
}

/// An image output as PNG, as its recipient keeps it: the worker seals the raw pixels, whose
/// size is fixed by the manifest, since a compressed image's length would tell the controller
/// how much detail it has.
///
/// # Errors
/// What is wrong with it.
pub fn image_png(output: &[u8]) -> Result<Vec<u8>, String> {
    let (width, height) = image_size(output)?;
    let rgb = image::RgbImage::from_raw(width, height, output[8..].to_vec())
        .ok_or("its pixels do not fill its size")?;
    let mut png = Vec::new();
    rgb.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(png)
}
