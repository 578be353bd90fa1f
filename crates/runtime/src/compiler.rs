//! Where modules are compiled: in this process, or in a child process that is killed at a
//! deadline and whose memory goes back to the system when it exits.
//!
//! Cranelift's working memory for one compile is about 66 KiB per function and the allocator
//! keeps it after the compile; a compile cannot be interrupted. A server therefore compiles in
//! a child (`loom compile-module`): the child reads the wasm bytes on stdin, writes wasmtime's
//! precompiled artifact on stdout and exits; the server loads the artifact. A child that
//! outlives the deadline is killed and the upload refused.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// Where [`Runtime::compile`] compiles.
#[derive(Clone, Debug, Default)]
pub enum Compiler {
    /// In this process: no deadline, and compile memory stays with this process's allocator.
    /// For tests and embedded use.
    #[default]
    InProcess,
    /// In a child process (see [`CompilerProcess`]).
    Process(CompilerProcess),
}

/// A program that compiles one module: wasm bytes on stdin, the artifact of
/// [`precompile`] on stdout, exit status 0; otherwise a message on stderr and a failure
/// status. It must run this crate's [`precompile`] built from the same source as the server
/// (wasmtime refuses artifacts from another version or configuration).
#[derive(Clone, Debug)]
pub struct CompilerProcess {
    /// The program (`/proc/self/exe` for the running `loom`).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Longest a compile may take; then the child is killed and the module refused.
    pub deadline: Duration,
}

/// Largest artifact accepted from a compiler process. A module within the compile limits
/// (16 MiB of code) compiles to far less.
const MAX_ARTIFACT: u64 = 1 << 30;

/// The code-generation settings, shared by the server's engine and a compiler process's, so
/// that artifacts made by one load in the other.
pub(crate) fn code_config() -> Config {
    let mut wasm = Config::new();
    wasm.consume_fuel(true);
    // Cranelift inlines small functions within a module (off by default in wasmtime): a
    // wasm call costs more than a native one (fuel and epoch bookkeeping), and guest code
    // is full of small functions, so inlining pays on every fold; the price is a longer
    // compile (and more compiled code per function, which the compile limits bound).
    wasm.compiler_inlining(wasmtime::Inlining::Yes);
    wasm.epoch_interruption(true);
    // Determinism: canonical NaNs, and the deterministic lowering of relaxed SIMD (threads
    // are not compiled in).
    wasm.cranelift_nan_canonicalization(true);
    wasm.relaxed_simd_deterministic(true);
    wasm
}

/// Compiles wasm bytes to a precompiled artifact: what a compiler process runs. Checks the
/// compile-cost limits first, as [`Runtime::compile`] does.
pub fn precompile(bytes: &[u8]) -> Result<Vec<u8>, String> {
    check_compile_cost(bytes).map_err(|e| e.to_string())?;
    let engine = Engine::new(&code_config()).map_err(|e| format!("{e:#}"))?;
    engine
        .precompile_module(bytes)
        .map_err(|e| format!("{e:#}"))
}

impl Runtime {
    /// Compiles validated-for-cost bytes where the configuration says.
    pub(crate) fn compile_code(&self, bytes: &[u8]) -> Result<WasmModule, ModuleError> {
        let valid = || WasmModule::validate(&self.engine, bytes).is_ok();
        match &self.config.compiler {
            Compiler::InProcess => WasmModule::from_binary(&self.engine, bytes).map_err(|e| {
                if valid() {
                    // Valid wasm the instance pool cannot hold.
                    ModuleError::OverLimits(e.root_cause().to_string())
                } else {
                    ModuleError::Invalid(format!("{e:#}"))
                }
            }),
            Compiler::Process(process) => {
                let artifact = run_compiler(process, bytes).map_err(|e| match e {
                    ProcessFailure::Refused(message) if valid() => ModuleError::OverLimits(message),
                    ProcessFailure::Refused(message) => ModuleError::Invalid(message),
                    ProcessFailure::Host(message) => ModuleError::OverLimits(message),
                })?;
                self.load_artifact(&artifact)
                    .map_err(|e| ModuleError::OverLimits(format!("{e:#}")))
            }
        }
    }

    #[allow(unsafe_code)]
    fn load_artifact(&self, artifact: &[u8]) -> wasmtime::Result<WasmModule> {
        // SAFETY: wasmtime requires the bytes to be an artifact that wasmtime itself produced
        // and that nobody altered. They come from `precompile`, run by the compiler process
        // this server was configured with (its own executable), over a pipe only the two
        // processes hold. wasmtime checks its version and the code configuration itself and
        // refuses a mismatch.
        unsafe { WasmModule::deserialize(&self.engine, artifact) }
    }
}

enum ProcessFailure {
    /// The compiler answered that the module cannot be compiled.
    Refused(String),
    /// The compile did not finish (deadline, signal, no such program).
    Host(String),
}

fn run_compiler(process: &CompilerProcess, bytes: &[u8]) -> Result<Vec<u8>, ProcessFailure> {
    let started = Instant::now();
    let mut child = Command::new(&process.program)
        .args(&process.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            ProcessFailure::Host(format!(
                "starting the compiler {}: {e}",
                process.program.display()
            ))
        })?;
    let (mut stdin, mut stdout, mut stderr) = (
        child.stdin.take().expect("piped"),
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    // Feed and drain on threads so that a child that stops reading (or writes before it has
    // read everything) cannot block this one past the deadline.
    let input = bytes.to_vec();
    let feeder = std::thread::spawn(move || {
        // A child that exits early closes the pipe; its status tells why.
        let _ = stdin.write_all(&input);
    });
    let drainer = std::thread::spawn(move || {
        let mut artifact = Vec::new();
        let read = (&mut stdout)
            .take(MAX_ARTIFACT + 1)
            .read_to_end(&mut artifact);
        let mut message = String::new();
        let _ = (&mut stderr).take(64 * 1024).read_to_string(&mut message);
        read.map(|_| (artifact, message))
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= process.deadline => {
                let _ = child.kill();
                let _ = child.wait();
                // The threads end when the pipes close; not waited for, so that anything the
                // child left holding them cannot hold this compile too.
                return Err(ProcessFailure::Host(format!(
                    "compiling took longer than the limit of {:?}",
                    process.deadline
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => {
                return Err(ProcessFailure::Host(format!(
                    "waiting for the compiler: {e}"
                )));
            }
        }
    };
    let _ = feeder.join();
    let (artifact, message) = drainer
        .join()
        .map_err(|_| ProcessFailure::Host("reading the compiler's output panicked".into()))?
        .map_err(|e| ProcessFailure::Host(format!("reading the compiler's output: {e}")))?;
    if status.success() {
        if artifact.len() as u64 > MAX_ARTIFACT {
            return Err(ProcessFailure::Host(format!(
                "the compiled module is larger than {MAX_ARTIFACT} bytes"
            )));
        }
        return Ok(artifact);
    }
    let message = message.trim();
    match status.code() {
        Some(_) if !message.is_empty() => Err(ProcessFailure::Refused(message.to_owned())),
        Some(code) => Err(ProcessFailure::Host(format!(
            "the compiler exited with status {code} and said nothing"
        ))),
        None => Err(ProcessFailure::Host(format!(
            "the compiler was killed ({status}); it may have run out of memory"
        ))),
    }
}
