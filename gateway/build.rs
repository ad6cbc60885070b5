// The catalog (include_dir!) and the migrations (sqlx::migrate!) are read at compile time;
// cargo must rebuild when a file in either directory changes.
fn main() {
    println!("cargo:rerun-if-changed=../providers");
    println!("cargo:rerun-if-changed=../migrations");
}
