export default function Overview() {
  return <h1>Fleet overview</h1>;
}
