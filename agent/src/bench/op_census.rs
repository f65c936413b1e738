//! Marks the timed steps for `scripts/op-census.sh`, which preloads a libtorch hook
//! (`agent/bench/op_census/op_census.cpp`) that counts the ATen operator calls of each workload
//! between these marks. In every ordinary run the hook is absent and these do nothing.

use std::cell::Cell;
use std::ffi::{CString, c_char, c_longlong};
use std::sync::OnceLock;

type BeginFn = unsafe extern "C" fn(*const c_char);
type EndFn = unsafe extern "C" fn(c_longlong);

struct Hooks {
    begin: BeginFn,
    end: EndFn,
}

fn hooks() -> Option<&'static Hooks> {
    static HOOKS: OnceLock<Option<Hooks>> = OnceLock::new();
    HOOKS
        .get_or_init(|| {
            let begin = lookup(c"ndhtl_op_census_begin")?;
            let end = lookup(c"ndhtl_op_census_end")?;
            // SAFETY: the hook library defines both with exactly these C signatures.
            Some(unsafe {
                Hooks {
                    begin: std::mem::transmute::<*mut libc::c_void, BeginFn>(begin),
                    end: std::mem::transmute::<*mut libc::c_void, EndFn>(end),
                }
            })
        })
        .as_ref()
}

fn lookup(symbol: &std::ffi::CStr) -> Option<*mut libc::c_void> {
    // SAFETY: dlsym over the symbols already loaded into the process, by a NUL-terminated name.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, symbol.as_ptr()) };
    (!address.is_null()).then_some(address)
}

thread_local! {
    static WORKLOAD: Cell<&'static str> = const { Cell::new("unnamed") };
}

/// The workload whose steps the next marks bracket.
pub fn set_workload(name: &'static str) {
    WORKLOAD.with(|workload| workload.set(name));
}

/// Counting starts: the timed steps follow.
pub fn begin() {
    let Some(hooks) = hooks() else {
        return;
    };
    let name = CString::new(WORKLOAD.with(Cell::get)).expect("workload names have no NUL");
    // SAFETY: a valid NUL-terminated string for the duration of the call.
    unsafe { (hooks.begin)(name.as_ptr()) };
}

/// Counting stops: the calls since [`begin`] were `steps` steps.
pub fn end(steps: usize) {
    if let Some(hooks) = hooks() {
        // SAFETY: a plain integer argument.
        unsafe { (hooks.end)(steps as c_longlong) };
    }
}
