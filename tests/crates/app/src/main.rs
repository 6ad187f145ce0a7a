fn main() {
    println!("{}", rich::describe());
}
