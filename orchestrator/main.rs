mod criteria;
mod scheduler;
fn main() {}
