//! The recordings of the CPU backends (`Backend::begin_recording`): the list
//! of (op, inputs, output) each `execute` made, run again in order on replay.

use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::ops::Op;
use crate::tensor::Tensor;

/// One recorded `execute`.
#[derive(Debug)]
pub struct RecordedOp {
    pub op: Op,
    pub inputs: Vec<Tensor>,
    pub out: Tensor,
}

/// The ops recorded so far, while recording.
#[derive(Debug, Default)]
pub struct OpRecorder(Mutex<Option<Vec<RecordedOp>>>);

impl OpRecorder {
    fn list(&self) -> Result<MutexGuard<'_, Option<Vec<RecordedOp>>>> {
        self.0.lock().map_err(|_| Error::Backend("cpu recording lock poisoned".into()))
    }

    /// Records the call when recording (`Ok(true)`); `Ok(false)`: run it now.
    pub fn record(&self, op: &Op, inputs: &[&Tensor], out: &Tensor) -> Result<bool> {
        match self.list()?.as_mut() {
            Some(list) => {
                let inputs = inputs.iter().map(|&t| t.clone()).collect();
                list.push(RecordedOp { op: op.clone(), inputs, out: out.clone() });
                Ok(true)
            }
            None => Ok(false),
        }
    }

    pub fn begin(&self) -> Result<bool> {
        let mut r = self.list()?;
        if r.is_some() {
            return Err(Error::Backend("cpu: already recording".into()));
        }
        *r = Some(Vec::new());
        Ok(true)
    }

    pub fn end(&self) -> Result<Vec<RecordedOp>> {
        self.list()?.take().ok_or_else(|| Error::Backend("cpu: not recording".into()))
    }
}
