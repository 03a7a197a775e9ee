//! Talking to nftables: libnftables in process when it is installed, else the `nft` program.
//!
//! Both take the same documented syntax, and a script is one kernel transaction either way.
//! The difference is cost: the `nft` program spends 2 to 3 ms per batch starting up and
//! reading the ruleset cache, while the same library called in process applies a one-element
//! batch in about 0.1 ms (measured on Debian 12's libnftables 1.0.6; `benches/kernel.sh`),
//! which is what brings a ban from decision to kernel under 2 ms. 100,000 elements in one
//! command cost about 0.4 s either way: that is the kernel's work.
//!
//! Why load the library at run time (`libloading`) rather than link it: moat then builds
//! without libnftables' headers, and runs (through the program) where only `nft` is present.
//! Debian's `nftables` package depends on `libnftables1`, so where `nft` works, the library
//! is there. Why not netlink from Rust: the crates that speak nf_tables netlink (nftnl,
//! rustables) wrap libnftnl and expose raw expressions; moat would rebuild nft's parser for
//! sets with timeouts and intervals, for no gain over the library that already does it.
//! `MOAT_NFT=program` forces the program (for comparisons).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

/// `NFT_CTX_OUTPUT_JSON` in `<nftables/libnftables.h>`.
const OUTPUT_JSON: c_uint = 1 << 4;
/// `NFT_CTX_OUTPUT_TERSE`: listings without set elements.
const OUTPUT_TERSE: c_uint = 1 << 11;

type CtxNew = unsafe extern "C" fn(c_uint) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxInt = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type SetFlags = unsafe extern "C" fn(*mut c_void, c_uint);
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// libnftables loaded, with one context whose output and errors go to buffers.
struct Library {
    ctx: *mut c_void,
    free: CtxFree,
    run: RunCmd,
    set_flags: SetFlags,
    output: CtxBuffer,
    error: CtxBuffer,
    // Last, so that it is dropped after the context is freed (see Drop).
    _lib: libloading::Library,
}

// SAFETY: the context is owned by this value and used only through `&mut self`, so from one
// thread at a time; libnftables keeps no thread-local state.
unsafe impl Send for Library {}

impl Library {
    fn load() -> Result<Library, String> {
        // SAFETY: loading libnftables runs no initialisers with preconditions; the symbols are
        // looked up with the signatures of <nftables/libnftables.h> (stable since 0.9).
        unsafe {
            let lib = libloading::Library::new("libnftables.so.1")
                .map_err(|e| format!("cannot load libnftables.so.1: {e}"))?;
            let new: CtxNew = *lib.get(b"nft_ctx_new\0").map_err(|e| e.to_string())?;
            let free: CtxFree = *lib.get(b"nft_ctx_free\0").map_err(|e| e.to_string())?;
            let buffer_output: CtxInt = *lib
                .get(b"nft_ctx_buffer_output\0")
                .map_err(|e| e.to_string())?;
            let buffer_error: CtxInt = *lib
                .get(b"nft_ctx_buffer_error\0")
                .map_err(|e| e.to_string())?;
            let output: CtxBuffer = *lib
                .get(b"nft_ctx_get_output_buffer\0")
                .map_err(|e| e.to_string())?;
            let error: CtxBuffer = *lib
                .get(b"nft_ctx_get_error_buffer\0")
                .map_err(|e| e.to_string())?;
            let set_flags: SetFlags = *lib
                .get(b"nft_ctx_output_set_flags\0")
                .map_err(|e| e.to_string())?;
            let run: RunCmd = *lib
                .get(b"nft_run_cmd_from_buffer\0")
                .map_err(|e| e.to_string())?;
            let ctx = new(0);
            if ctx.is_null() {
                return Err("nft_ctx_new failed".into());
            }
            if buffer_output(ctx) != 0 || buffer_error(ctx) != 0 {
                free(ctx);
                return Err("cannot buffer libnftables' output".into());
            }
            Ok(Library {
                ctx,
                free,
                run,
                set_flags,
                output,
                error,
                _lib: lib,
            })
        }
    }

    /// Runs `script` with output `flags`; its output, or its first error line.
    fn run(&mut self, script: &str, flags: c_uint) -> Result<String, String> {
        let script = CString::new(script).map_err(|_| "a NUL byte in an nft script")?;
        // SAFETY: `ctx` is valid until Drop; the buffers returned are owned by the context and
        // valid until the next call, and are copied out before it.
        unsafe {
            (self.set_flags)(self.ctx, flags);
            let rc = (self.run)(self.ctx, script.as_ptr());
            let text = |p: *const c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            if rc == 0 {
                Ok(text((self.output)(self.ctx)))
            } else {
                Err(first_line(&text((self.error)(self.ctx))))
            }
        }
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: created by nft_ctx_new, freed once.
        unsafe { (self.free)(self.ctx) }
    }
}

fn first_line(err: &str) -> String {
    format!("nft: {}", err.lines().next().unwrap_or("failed").trim())
}

/// A way to run nft scripts.
pub struct Nft {
    library: Option<Library>,
    /// Why the library is not used, when it is not.
    why_program: Option<String>,
}

impl Nft {
    /// The library when it loads (and `MOAT_NFT` is not `program`), else the program.
    pub fn open() -> Nft {
        if std::env::var("MOAT_NFT").is_ok_and(|v| v == "program") {
            return Nft {
                library: None,
                why_program: Some("MOAT_NFT=program".into()),
            };
        }
        match Library::load() {
            Ok(library) => Nft {
                library: Some(library),
                why_program: None,
            },
            Err(e) => Nft {
                library: None,
                why_program: Some(e),
            },
        }
    }

    /// How scripts run, for status and logs.
    pub fn describe(&self) -> String {
        match &self.why_program {
            None => "libnftables in process".into(),
            Some(why) => format!("the nft program ({why})"),
        }
    }

    /// Applies `script` as one transaction; the error is nft's message.
    pub fn run(&mut self, script: &str) -> Result<(), String> {
        match &mut self.library {
            Some(lib) => lib.run(script, 0).map(drop),
            None => program(&[], script).map(drop),
        }
    }

    /// Whether nftables works here (a listing of the ruleset succeeds); how scripts reach it.
    pub fn probe() -> Result<String, String> {
        let mut nft = Nft::open();
        nft.list_json("list ruleset", true)
            .map(|_| nft.describe())
            .map_err(|e| format!("nft list ruleset failed: {e}"))
    }

    /// Runs a listing command (`list table inet moat`) and returns its JSON text; `terse`
    /// leaves out set elements.
    pub fn list_json(&mut self, command: &str, terse: bool) -> Result<String, String> {
        match &mut self.library {
            Some(lib) => {
                let flags = OUTPUT_JSON | if terse { OUTPUT_TERSE } else { 0 };
                lib.run(command, flags)
            }
            None => {
                let mut args = vec!["-j"];
                if terse {
                    args.push("-t");
                }
                program(&args, command)
            }
        }
    }
}

/// Runs `nft ARGS -f -` with `script` on its input; its output, or its first error line.
fn program(args: &[&str], script: &str) -> Result<String, String> {
    let mut all = args.to_vec();
    all.extend(["-f", "-"]);
    super::run("nft", &all, Some(script)).map_err(|e| match e {
        super::NetfilterError::Failed { message, .. } => first_line(&message),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_first_line() {
        assert_eq!(
            first_line("Error: No such file or directory\nlist table inet x\n   ^^^\n"),
            "nft: Error: No such file or directory"
        );
        assert_eq!(first_line(""), "nft: failed");
    }
}
