//! The `node` runtime: warm Node.js worker processes running `bootstrap.mjs`, which imports the
//! handler file (ES module or CommonJS) and calls `handler(event, context)` (or `handle`, or the
//! default export). Memory is limited with V8's `--max-old-space-size` (an address-space rlimit
//! would stop V8 from reserving its heap).
//!
//! TypeScript handlers (`.ts`, `.mts`, `.cts`) run on Node's own type stripping where the installed
//! Node has it (22.6 and newer; behind `--experimental-strip-types` before 22.18 and 23.6), else
//! through the `typescript` package's `transpileModule` in a module loader hook (ES modules only).

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
    let (flags, transpiler) = typescript(config, &handler, &program).map_err(err)?;
    let mut args = vec![format!("--max-old-space-size={memory}")];
    args.extend(flags);
    args.extend([
        "--input-type=module".to_owned(),
        "-e".to_owned(),
        BOOTSTRAP.to_owned(),
        handler.display().to_string(),
        config.entrypoint.clone().unwrap_or_else(|| "-".to_owned()),
        transpiler.map_or_else(|| "-".to_owned(), |p| p.display().to_string()),
    ]);
    Ok(Spawn {
        program,
        args,
        env: base_env(&config.env),
        cwd,
        function: config.name.clone(),
        limits: limits_of(config, false),
    })
}

/// How a TypeScript handler runs: extra node flags, and the `typescript` package folder when the
/// worker must transpile. Nothing for JavaScript handlers.
fn typescript(config: &FunctionConfig, handler: &Path, node: &Path) -> Result<(Vec<String>, Option<PathBuf>), String> {
    let ext = handler.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !matches!(ext, "ts" | "mts" | "cts") {
        return Ok((Vec::new(), None));
    }
    if config.typescript.is_none() {
        match node_version(node) {
            Some(v) if strips_types_by_default(v) => return Ok((Vec::new(), None)),
            Some(v) if strips_types_with_flag(v) => return Ok((vec!["--experimental-strip-types".to_owned()], None)),
            _ => {}
        }
    }
    if ext == "cts" {
        return Err(format!(
            "TypeScript handler {}: CommonJS TypeScript (.cts) needs a Node.js that strips types (22.6 or \
             newer); write it as .ts or .mts (an ES module) to run it through the typescript package",
            handler.display()
        ));
    }
    let package = match &config.typescript {
        Some(dir) => Some(PathBuf::from(dir)),
        None => handler.ancestors().skip(1).map(|d| d.join("node_modules/typescript")).find(|p| p.is_dir()),
    };
    let Some(package) = package.filter(|p| p.join("package.json").is_file()) else {
        let version = node_version(node).map_or_else(|| "unknown".to_owned(), |(a, b, c)| format!("{a}.{b}.{c}"));
        return Err(format!(
            "TypeScript handler {}: this Node.js ({version}) cannot strip types (22.6 or newer can), and {}; \
             run `npm install typescript` next to the handler or set `typescript:` to the package folder",
            handler.display(),
            config.typescript.as_ref().map_or_else(
                || "no `typescript` package is in a node_modules folder above the handler".to_owned(),
                |d| format!("`typescript: {d}` is not a package folder (no package.json)")
            ),
        ));
    };
    Ok((vec!["--enable-source-maps".to_owned()], Some(std::fs::canonicalize(&package).unwrap_or(package))))
}

fn node_version(node: &Path) -> Option<(u32, u32, u32)> {
    let out = std::process::Command::new(node).arg("--version").env_clear().output().ok()?;
    parse_version(std::str::from_utf8(&out.stdout).ok()?)
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.trim().trim_start_matches('v').splitn(3, '.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// Node.js strips types without a flag from 22.18 and 23.6.
fn strips_types_by_default((major, minor, _): (u32, u32, u32)) -> bool {
    major >= 24 || (major == 23 && minor >= 6) || (major == 22 && minor >= 18)
}

/// Node.js 22.6 to 22.17 and 23.0 to 23.5 strip types behind `--experimental-strip-types`.
fn strips_types_with_flag((major, minor, _): (u32, u32, u32)) -> bool {
    (major == 22 && minor >= 6) || major == 23
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_stripping_by_node_version() {
        assert_eq!(parse_version("v20.20.2\n"), Some((20, 20, 2)));
        assert_eq!(parse_version("garbage"), None);
        for (v, default, flag) in [
            ((20, 20, 2), false, false),
            ((22, 5, 0), false, false),
            ((22, 6, 0), false, true),
            ((22, 18, 0), true, true),
            ((23, 5, 1), false, true),
            ((23, 6, 0), true, true),
            ((24, 0, 0), true, false),
        ] {
            assert_eq!(strips_types_by_default(v), default, "{v:?}");
            assert!(strips_types_by_default(v) || strips_types_with_flag(v) == flag, "{v:?}");
        }
    }

    #[test]
    fn javascript_handlers_need_nothing_and_missing_typescript_is_named() {
        let config = FunctionConfig::new("t", switchyard_schemas::config::RuntimeKind::Node);
        let node = Path::new("/nonexistent/node");
        assert_eq!(typescript(&config, Path::new("/x/h.mjs"), node).unwrap(), (Vec::new(), None));
        let dir = tempfile::tempdir().unwrap();
        let err = typescript(&config, &dir.path().join("h.ts"), node).unwrap_err();
        assert!(err.contains("npm install typescript"), "{err}");
        let err = typescript(&config, &dir.path().join("h.cts"), node).unwrap_err();
        assert!(err.contains(".cts"), "{err}");
        let pkg = dir.path().join("node_modules/typescript");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(pkg.join("package.json"), "{}").unwrap();
        let (flags, found) = typescript(&config, &dir.path().join("src/h.ts"), node).unwrap();
        assert_eq!(flags, ["--enable-source-maps"]);
        assert_eq!(found.unwrap(), std::fs::canonicalize(&pkg).unwrap());
    }
}
