//! The `node` runtime: warm Node.js worker processes running `bootstrap.mjs`, which imports the
//! handler file (ES module or CommonJS) and calls `handler(event, context)` (or `handle`, or the
//! default export). Memory is limited with V8's `--max-old-space-size` (an address-space rlimit
//! would stop V8 from reserving its heap).

use std::path::{Path, PathBuf};

use switchyard_schemas::config::FunctionConfig;

use super::{base_env, limits_of, which, Spawn, DEFAULT_MEMORY_MB};
use crate::runtime::DeployError;

/// The worker script, passed to node with `--input-type=module -e`.
pub const BOOTSTRAP: &str = include_str!("bootstrap.mjs");

/// The spawn spec of a Node function.
///
/// # Errors
/// [`DeployError`] when the file or node is missing.
pub fn spec(config: &FunctionConfig) -> Result<Spawn, DeployError> {
    let err = |message: String| DeployError { function: config.name.clone(), message };
    let handler = config.handler.as_deref().ok_or_else(|| err("runtime node needs `handler`".to_owned()))?;
    let handler = std::fs::canonicalize(handler).map_err(|e| err(format!("handler file {handler:?}: {e}")))?;
    if !handler.is_file() {
        return Err(err(format!("handler {} is not a file", handler.display())));
    }
    let interpreter = config.interpreter.as_deref().unwrap_or("node");
    let program =
        which(interpreter).ok_or_else(|| err(format!("Node.js interpreter {interpreter:?} not found on PATH")))?;
    let program = std::fs::canonicalize(&program).unwrap_or(program);
    let cwd = handler.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let memory = config.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
    Ok(Spawn {
        program,
        args: vec![
            format!("--max-old-space-size={memory}"),
            "--input-type=module".to_owned(),
            "-e".to_owned(),
            BOOTSTRAP.to_owned(),
            handler.display().to_string(),
            config.entrypoint.clone().unwrap_or_else(|| "-".to_owned()),
        ],
        env: base_env(&config.env),
        cwd,
        function: config.name.clone(),
        limits: limits_of(config, false),
    })
}
