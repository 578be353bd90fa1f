//! The guest SDK's heap (guest-sdk/loom-guest/src/alloc.rs) in a real example module: a call's
//! small allocations come from the initial memory, so a pooled instance is not grown (and
//! then re-protected by the pool) on every call; a large one still grows the memory.

use wasmtime::{Engine, Linker, Memory, Module, Store, TypedFunc};

const PAGE: u64 = 64 * 1024;

fn instance() -> (Store<()>, Memory, TypedFunc<i32, i32>) {
    let engine = Engine::default();
    let module = Module::new(&engine, loom_testkit::example_wasm("cart")).unwrap();
    let mut store = Store::new(&engine, ());
    // Its one import (`log`) is not called by `loom_alloc`.
    let mut linker = Linker::new(&engine);
    linker.define_unknown_imports_as_traps(&module).unwrap();
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let memory = instance.get_memory(&mut store, "memory").unwrap();
    let alloc = instance
        .get_typed_func::<i32, i32>(&mut store, "loom_alloc")
        .unwrap();
    (store, memory, alloc)
}

#[test]
fn a_small_call_allocates_from_the_initial_memory_and_a_large_one_grows_it() {
    let (mut store, memory, alloc) = instance();
    let initial = memory.size(&store);
    // Rust's default wasm allocator grows the memory on its first allocation, however small.
    for len in [64, 4096, 100_000, 300_000] {
        let ptr = alloc.call(&mut store, len).unwrap() as u32 as u64;
        assert_eq!(
            memory.size(&store),
            initial,
            "loom_alloc({len}) grew the memory"
        );
        assert!(
            ptr + len as u64 <= initial * PAGE,
            "buffer {ptr:#x}+{len} out of bounds"
        );
    }
    // Past the arena: the memory grows, and the buffer lies inside it.
    let len = 3 << 20;
    let ptr = alloc.call(&mut store, len).unwrap() as u32 as u64;
    let grown = memory.size(&store);
    assert!(grown > initial, "a 3 MiB buffer did not grow the memory");
    assert!(
        ptr + len as u64 <= grown * PAGE,
        "buffer {ptr:#x}+{len} out of bounds"
    );
    // The grown pages are usable.
    memory
        .write(&mut store, (ptr + len as u64 - 1) as usize, &[7])
        .unwrap();
}
