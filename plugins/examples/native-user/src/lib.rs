//! An action written as a native library: it reads `GET /user` through the connection and
//! returns the login, with the action's input echoed back.

use latchkey_plugin_sdk::{export_function, Host};
use serde_json::{json, Value};

fn run(host: &Host, context: Value) -> Result<Value, String> {
    host.log("info", "native-user: reading the user");
    let user = host.call("proxy", &json!({ "method": "GET", "endpoint": "/user" }))?;
    Ok(json!({ "login": user["data"]["login"], "runtime": "native", "input": context["input"] }))
}

export_function!(run);
