CREATE TABLE "host_blocking_reasons" (
	"host_id" uuid NOT NULL,
	"reason" text NOT NULL,
	"count" integer NOT NULL,
	"message" text,
	"remedy" text,
	CONSTRAINT "host_blocking_reasons_host_id_reason_pk" PRIMARY KEY("host_id","reason")
);
--> statement-breakpoint
CREATE TABLE "host_device_stats" (
	"host_id" uuid NOT NULL,
	"vendor_id" text NOT NULL,
	"device_id" text NOT NULL,
	"numa_node" integer,
	"vendor_name" text,
	"device_name" text,
	"class_name" text,
	"type_hosts" integer NOT NULL,
	"total" integer NOT NULL,
	"status_bound" integer NOT NULL,
	"vfio_bound" integer NOT NULL,
	"ready" integer NOT NULL,
	"blocked" integer NOT NULL,
	"vf_headroom" integer NOT NULL,
	CONSTRAINT "host_device_stats_key" UNIQUE NULLS NOT DISTINCT("host_id","vendor_id","device_id","numa_node")
);
--> statement-breakpoint
ALTER TABLE "host_blocking_reasons" ADD CONSTRAINT "host_blocking_reasons_host_id_hosts_id_fk" FOREIGN KEY ("host_id") REFERENCES "public"."hosts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "host_device_stats" ADD CONSTRAINT "host_device_stats_host_id_hosts_id_fk" FOREIGN KEY ("host_id") REFERENCES "public"."hosts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
-- Backfill: the rollups of the hosts already stored, as syncHostRollups (src/rollups.ts) computes
-- them at ingest. Without it an existing fleet's dashboard would count nothing until each host's
-- inventory changed, since an unchanged resend stores nothing.
INSERT INTO "host_device_stats" ("host_id", "vendor_id", "device_id", "numa_node", "vendor_name",
  "device_name", "class_name", "type_hosts", "total", "status_bound", "vfio_bound", "ready",
  "blocked", "vf_headroom")
SELECT d.host_id, d.vendor_id, d.device_id, d.numa_node,
       max(d.vendor_name), max(d.device_name), max(d.class_name),
       CASE WHEN row_number() OVER (PARTITION BY d.host_id, d.vendor_id, d.device_id
                                    ORDER BY d.numa_node NULLS FIRST) = 1
            THEN 1 ELSE 0 END,
       count(*)::int,
       count(*) FILTER (WHERE d.status = 'bound')::int,
       count(*) FILTER (WHERE (d.driver LIKE 'vfio%' OR d.driver LIKE '%vfio_pci' OR (d.vfio_driver IS NOT NULL AND d.driver = d.vfio_driver)))::int,
       count(*) FILTER (WHERE d.status = 'ready')::int,
       count(*) FILTER (WHERE d.status = 'blocked')::int,
       coalesce(sum(greatest(d.sriov_total_vfs - coalesce(d.sriov_num_vfs, 0), 0)), 0)::int
FROM "devices" d
GROUP BY d.host_id, d.vendor_id, d.device_id, d.numa_node;
--> statement-breakpoint
INSERT INTO "host_blocking_reasons" ("host_id", "reason", "count", "message", "remedy")
SELECT g.host_id, g.first_reason, g.n, g.sample[1], g.sample[2]
FROM (
  SELECT d.host_id, d.first_reason, count(*)::int AS n,
         min(ARRAY[d.reasons -> 0 ->> 'message', d.reasons -> 0 ->> 'remedy']) AS sample
  FROM "devices" d
  WHERE d.status = 'blocked' AND d.first_reason IS NOT NULL
  GROUP BY d.host_id, d.first_reason
) g;
