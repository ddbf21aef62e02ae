//! Reading fields of JavaScript objects: bytes given directly or as a URL to fetch.

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// The string field `name` of `object`, if present.
pub fn string_field(object: &JsValue, name: &str) -> Option<String> {
    Reflect::get(object, &name.into()).ok().and_then(|v| v.as_string())
}

/// The bytes of field `name`: a `Uint8Array` or `ArrayBuffer` as given, or the response body of
/// a URL string.
pub async fn bytes_field(object: &JsValue, name: &str) -> Result<Vec<u8>, JsError> {
    let value = Reflect::get(object, &name.into()).map_err(|_| missing(name))?;
    if let Some(url) = value.as_string() {
        return fetch_bytes(&url).await;
    }
    if value.is_instance_of::<Uint8Array>() || value.is_instance_of::<js_sys::ArrayBuffer>() {
        return Ok(Uint8Array::new(&value).to_vec());
    }
    Err(missing(name))
}

fn missing(name: &str) -> JsError {
    JsError::new(&format!("`{name}` must be a Uint8Array, an ArrayBuffer or a URL string"))
}

/// Fetches `url` with the global `fetch` (a window or a worker) and returns the body.
pub async fn fetch_bytes(url: &str) -> Result<Vec<u8>, JsError> {
    let global = js_sys::global();
    let fetch: js_sys::Function = Reflect::get(&global, &"fetch".into())
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| JsError::new("this environment has no fetch()"))?;
    let failed = |detail: String| JsError::new(&format!("fetching {url} failed: {detail}"));
    let promise: js_sys::Promise = fetch
        .call1(&global, &url.into())
        .map_err(|e| failed(format!("{e:?}")))?
        .dyn_into()
        .map_err(|_| failed("fetch() did not return a promise".into()))?;
    let response = JsFuture::from(promise).await.map_err(|e| failed(format!("{e:?}")))?;
    let ok = Reflect::get(&response, &"ok".into()).ok().and_then(|v| v.as_bool()).unwrap_or(false);
    if !ok {
        let status = Reflect::get(&response, &"status".into()).ok().and_then(|v| v.as_f64()).unwrap_or(0.0);
        return Err(failed(format!("HTTP status {status}")));
    }
    let array_buffer: js_sys::Function = Reflect::get(&response, &"arrayBuffer".into())
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| failed("the response has no body".into()))?;
    let buffer_promise: js_sys::Promise = array_buffer
        .call0(&response)
        .map_err(|e| failed(format!("{e:?}")))?
        .dyn_into()
        .map_err(|_| failed("arrayBuffer() did not return a promise".into()))?;
    let buffer = JsFuture::from(buffer_promise).await.map_err(|e| failed(format!("{e:?}")))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}
