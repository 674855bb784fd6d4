//! Obscura's clean room, its core: what a piece of work is and how it is named
//! ([`work::Work`], [`work::WorkId`]), and the sandbox its function runs in
//! ([`sandbox::Sandbox`]). No sockets, no clock: the worker, nodes and CLI wrap it.
//!
//! A run, end to end in one process (the worker does the same on images it rebuilt from
//! shares):
//!
//! ```
//! use obscura_room::sandbox::{Input, Sandbox};
//! use obscura_room::work::{InputSpec, Limits, Manifest, OutputKind, OutputSpec, Work};
//!
//! // A function that writes how many inputs it was given, as JSON.
//! let module = r#"(module
//!   (import "obscura" "inputs" (func $inputs (result i32)))
//!   (import "obscura" "output" (func $output (param i32 i32)))
//!   (memory (export "memory") 1)
//!   (func (export "run") (result i32)
//!     (i32.store8 (i32.const 0) (i32.add (i32.const 48) (call $inputs)))
//!     (call $output (i32.const 0) (i32.const 1))
//!     (i32.const 0)))"#;
//! let manifest = Manifest {
//!     inputs: vec![InputSpec { image: [1; 16], label: None }],
//!     labels: vec![],
//!     parameters: vec![],
//!     output: OutputSpec { kind: OutputKind::Json, max_bytes: 16 },
//!     limits: Limits { fuel: 1_000_000, memory_bytes: 1 << 20 },
//!     recipients: vec![[9; 32]],
//! };
//! let work = Work::new(module.as_bytes(), manifest)?;
//! println!("Work-ID {}", work.id()); // what the owner approves
//!
//! let sandbox = Sandbox::new()?;
//! let function = sandbox.compile(&work).expect("a clean-room function");
//! let image = Input::from_rgb(2, 1, vec![255, 0, 0, 0, 0, 255])?;
//! let ran = sandbox.run(&function, work.manifest(), vec![image]).expect("it runs");
//! assert_eq!(ran.output, b"1");
//! # Ok::<(), obscura_room::RoomError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "sandbox")]
pub mod job;
pub mod local;
pub mod result;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod work;

/// Why a piece of work or an input was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// The module is not WebAssembly (text or binary), or is too large.
    #[error("the module: {0}")]
    Module(String),
    /// The manifest breaks a limit.
    #[error("the manifest: {0}")]
    Manifest(String),
    /// An input image does not decode or is too large.
    #[error("an input image: {0}")]
    Image(String),
    /// Wasmtime did not start.
    #[error("the WebAssembly engine: {0}")]
    Engine(String),
}
