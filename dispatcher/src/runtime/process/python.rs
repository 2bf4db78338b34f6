//! The `python` runtime: warm worker processes running `bootstrap.py`, which loads the handler file
//! and calls `handler(event)` or `handler(event, context)`.

use std::path::{Path, PathBuf};

use switchyard_schemas::config::FunctionConfig;

use super::{base_env, limits_of, Spawn};
use crate::runtime::DeployError;

/// The worker script, passed to the interpreter with `-c` so the binary needs no files beside it.
pub const BOOTSTRAP: &str = include_str!("bootstrap.py");

/// The spawn spec of a Python function: checks the handler file and resolves the interpreter to an
/// absolute path (the worker's environment is cleared, so it cannot rely on the broker's PATH or
/// pyenv shims).
///
/// # Errors
/// [`DeployError`] when the file or the interpreter is missing.
pub async fn spec(config: &FunctionConfig) -> Result<Spawn, DeployError> {
    let err = |message: String| DeployError { function: config.name.clone(), message };
    let handler = config.handler.as_deref().ok_or_else(|| err("runtime python needs `handler`".to_owned()))?;
    let handler = std::fs::canonicalize(handler).map_err(|e| err(format!("handler file {handler:?}: {e}")))?;
    if !handler.is_file() {
        return Err(err(format!("handler {} is not a file", handler.display())));
    }
    let interpreter = config.interpreter.as_deref().unwrap_or("python3");
    let (program, site_path) = resolve_interpreter(interpreter).await.map_err(err)?;
    let cwd = handler.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let mut env = base_env(&config.env);
    env.entry("PYTHONUNBUFFERED".to_owned()).or_insert_with(|| "1".to_owned());
    env.entry("PYTHONDONTWRITEBYTECODE".to_owned()).or_insert_with(|| "1".to_owned());
    // Workers start with -S (no `site`: its .pth hooks can cost tens of milliseconds per cold start);
    // the path a normal interpreter would have is passed instead, so installed packages import as usual.
    let path = match env.get("PYTHONPATH") {
        Some(own) if !own.is_empty() => format!("{own}:{site_path}"),
        _ => site_path,
    };
    env.insert("PYTHONPATH".to_owned(), path);
    Ok(Spawn {
        program,
        args: vec![
            "-S".to_owned(),
            "-u".to_owned(),
            "-c".to_owned(),
            BOOTSTRAP.to_owned(),
            handler.display().to_string(),
            config.entrypoint.clone().unwrap_or_else(|| "handler".to_owned()),
        ],
        env,
        cwd,
        function: config.name.clone(),
        limits: limits_of(config, true),
    })
}

/// The interpreter's absolute path and the `sys.path` a normal start gives it (site-packages and
/// what .pth files add), joined for PYTHONPATH.
async fn resolve_interpreter(name: &str) -> Result<(PathBuf, String), String> {
    let out = tokio::process::Command::new(name)
        .args(["-c", "import sys; print(sys.executable); print(':'.join(p for p in sys.path if p))"])
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run Python interpreter {name:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("Python interpreter {name:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let path = lines.next().unwrap_or_default().trim().to_owned();
    if path.is_empty() {
        return Err(format!("Python interpreter {name:?} did not report sys.executable"));
    }
    Ok((PathBuf::from(path), lines.next().unwrap_or_default().trim().to_owned()))
}
