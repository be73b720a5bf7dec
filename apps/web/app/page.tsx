export default function Home() {
  return (
    <main>
      <h1>vfio-fleet</h1>
      <p>
        The server is running. The dashboard (fleet summary, capacity, hosts, devices, jobs) lands
        in the next issue; its data already comes from the tRPC API on <code>/api/trpc</code>.
      </p>
      <ul>
        <li>
          <a href="/api/health">/api/health</a> — database, hosts online and offline, connected
          agents
        </li>
        <li>
          <a href="/metrics">/metrics</a> — Prometheus metrics
        </li>
      </ul>
    </main>
  );
}
