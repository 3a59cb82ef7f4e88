//! Helpers shared by the runtime's integration tests (each test crate uses some of them).
#![allow(dead_code)]

pub mod hub_server;
pub mod python;

use burn::tensor::Device;
use poc_runtime::device::DeviceSpec;
use poc_runtime::model::LlamaConfig;

/// The plain CPU device.
pub fn cpu() -> Device {
    DeviceSpec::Cpu.device()
}

/// The `tiny` preset shrunk for fast tests: hidden 32, 2 layers, 4 attention heads sharing
/// `kv_heads` key/value heads, MLP 48.
pub fn small_config(kv_heads: usize) -> LlamaConfig {
    let mut c = LlamaConfig::preset("tiny").expect("the tiny preset");
    c.hidden_size = 32;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = Some(kv_heads);
    c.intermediate_size = 48;
    c
}
