// kv_store: cache[slots[t], :] = src[t, :] (engine/src/ops/kv_store.rs), in
// place: slots not named keep their contents. One invocation per element of a
// window of src tokens; a cache larger than one binding is written through
// several windows of slots, each dispatch writing the tokens whose slot falls
// in its window.

struct Params {      // KvStoreParams in backend-wgpu/src/ops/kv_store.rs
    tokens: u32,     // src tokens in this window
    row: u32,        // floats per slot: kv_heads * head_dim
    t0: u32,         // first token of the src window
    src_base: u32,
    slot0: u32,      // first slot of the cache window
    slots: u32,      // slots in the cache window
    cache_base: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> slot_of: array<u32>;
@group(0) @binding(3) var<storage, read_write> cache: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (e >= p.tokens * p.row) {
        return;
    }
    let t = e / p.row;
    let c = e % p.row;
    let slot = slot_of[p.t0 + t];
    if (slot < p.slot0 || slot - p.slot0 >= p.slots) {
        return;
    }
    cache[p.cache_base + (slot - p.slot0) * p.row + c] = src[p.src_base + e];
}
