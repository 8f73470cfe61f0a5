//! A load reports its progress layer by layer and stops when told to.

mod common;

use std::cell::RefCell;
use std::sync::Arc;

use ferrum_engine::model::QuantPolicy;
use ferrum_engine::source::ModelSource;
use ferrum_engine::{CpuBackend, Error, Model};

#[test]
fn a_load_reports_each_layer_and_can_be_cancelled() {
    let source = ModelSource::open(&common::fixture_named("llama")).unwrap();
    let layers = source.config.num_layers;
    assert!(layers >= 2);
    let policy = QuantPolicy::default();
    let seen = RefCell::new(Vec::new());
    let model = Model::from_store_with_progress(
        source.config.clone(),
        &source.weights,
        Arc::new(CpuBackend::new()),
        &policy,
        &|done, total| {
            seen.borrow_mut().push((done, total));
            true
        },
    )
    .unwrap();
    assert_eq!(*seen.borrow(), (1..=layers).map(|l| (l, layers)).collect::<Vec<_>>());
    // the same weights as a load without a callback
    let plain = Model::from_store(source.config.clone(), &source.weights, Arc::new(CpuBackend::new())).unwrap();
    assert_eq!(model.weight_bytes(), plain.weight_bytes());

    let calls = RefCell::new(0);
    let cancelled = Model::from_store_with_progress(
        source.config.clone(),
        &source.weights,
        Arc::new(CpuBackend::new()),
        &policy,
        &|_, _| {
            *calls.borrow_mut() += 1;
            false
        },
    );
    assert!(matches!(cancelled, Err(Error::Cancelled)), "{:?}", cancelled.err());
    assert_eq!(*calls.borrow(), 1, "the load stops at the first layer's report");
}
