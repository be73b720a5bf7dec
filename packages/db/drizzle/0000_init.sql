CREATE TABLE "agent_credentials" (
	"agent_id" text PRIMARY KEY NOT NULL,
	"host_id" uuid,
	"secret_hash" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"revoked_at" timestamp with time zone,
	"last_used_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "audit_log" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"at" timestamp with time zone DEFAULT now() NOT NULL,
	"user_id" uuid,
	"username" text,
	"action" text NOT NULL,
	"host_id" uuid,
	"iommu_group" integer,
	"address" text,
	"detail" jsonb
);
--> statement-breakpoint
CREATE TABLE "devices" (
	"host_id" uuid NOT NULL,
	"address" text NOT NULL,
	"vendor_id" text NOT NULL,
	"device_id" text NOT NULL,
	"subsystem_vendor_id" text,
	"subsystem_device_id" text,
	"class_code" text NOT NULL,
	"revision" text,
	"driver" text,
	"driver_module" text,
	"driver_override" text,
	"iommu_group" integer,
	"numa_node" integer,
	"kind" text NOT NULL,
	"parent" text,
	"physfn" text,
	"sriov_total_vfs" integer,
	"sriov_num_vfs" integer,
	"vendor_name" text,
	"device_name" text,
	"class_name" text,
	"vfio_module" text,
	"vfio_driver" text,
	"status" text NOT NULL,
	"reason_codes" text[] DEFAULT '{}'::text[] NOT NULL,
	"first_reason" text,
	"reasons" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"facts" jsonb NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "devices_host_id_address_pk" PRIMARY KEY("host_id","address"),
	CONSTRAINT "devices_status_check" CHECK ("status" IN ('bound', 'ready', 'blocked'))
);
--> statement-breakpoint
CREATE TABLE "enrollment_tokens" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"token_hash" text NOT NULL,
	"label" text,
	"created_by" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"revoked_at" timestamp with time zone,
	"uses" integer DEFAULT 0 NOT NULL,
	"max_uses" integer,
	CONSTRAINT "enrollment_tokens_token_hash_unique" UNIQUE("token_hash"),
	CONSTRAINT "enrollment_tokens_uses_check" CHECK ("enrollment_tokens"."uses" >= 0),
	CONSTRAINT "enrollment_tokens_max_uses_check" CHECK ("enrollment_tokens"."max_uses" IS NULL OR ("enrollment_tokens"."max_uses" > 0 AND "enrollment_tokens"."uses" <= "enrollment_tokens"."max_uses"))
);
--> statement-breakpoint
CREATE TABLE "host_labels" (
	"host_id" uuid NOT NULL,
	"key" text NOT NULL,
	"value" text NOT NULL,
	CONSTRAINT "host_labels_host_id_key_pk" PRIMARY KEY("host_id","key")
);
--> statement-breakpoint
CREATE TABLE "hosts" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"agent_id" text NOT NULL,
	"hostname" text NOT NULL,
	"machine_id" text,
	"kernel_release" text,
	"cpu_vendor" text,
	"iommu_enabled" boolean DEFAULT false NOT NULL,
	"interrupt_remapping" text,
	"state" text DEFAULT 'offline' NOT NULL,
	"last_seen_at" timestamp with time zone,
	"connected_at" timestamp with time zone,
	"epoch" text,
	"last_seq" bigint,
	"host" jsonb,
	"problems" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "hosts_agent_id_unique" UNIQUE("agent_id"),
	CONSTRAINT "hosts_state_check" CHECK ("state" IN ('online', 'offline'))
);
--> statement-breakpoint
CREATE TABLE "iommu_groups" (
	"host_id" uuid NOT NULL,
	"group_id" integer NOT NULL,
	"devices" text[] DEFAULT '{}'::text[] NOT NULL,
	CONSTRAINT "iommu_groups_host_id_group_id_pk" PRIMARY KEY("host_id","group_id")
);
--> statement-breakpoint
CREATE TABLE "job_events" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"job_id" uuid NOT NULL,
	"at" timestamp with time zone DEFAULT now() NOT NULL,
	"from_state" text,
	"to_state" text NOT NULL,
	"message" text,
	"data" jsonb
);
--> statement-breakpoint
CREATE TABLE "jobs" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"host_id" uuid NOT NULL,
	"iommu_group" integer NOT NULL,
	"address" text NOT NULL,
	"target" text NOT NULL,
	"force" boolean DEFAULT false NOT NULL,
	"state" text DEFAULT 'queued' NOT NULL,
	"preview" jsonb,
	"result" jsonb,
	"created_by" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"deadline" timestamp with time zone NOT NULL,
	"lease_until" timestamp with time zone,
	"dispatched_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	"attempt" integer DEFAULT 0 NOT NULL,
	"canary_of" uuid,
	"bulk_id" uuid,
	CONSTRAINT "jobs_state_check" CHECK ("state" IN ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'rolled_back', 'cancelled', 'expired')),
	CONSTRAINT "jobs_target_check" CHECK ("target" IN ('vfio', 'host'))
);
--> statement-breakpoint
CREATE TABLE "sessions" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"token_hash" text NOT NULL,
	"user_id" uuid NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"revoked_at" timestamp with time zone,
	CONSTRAINT "sessions_token_hash_unique" UNIQUE("token_hash")
);
--> statement-breakpoint
CREATE TABLE "users" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"username" text NOT NULL,
	"password_hash" text NOT NULL,
	"role" text DEFAULT 'viewer' NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"disabled_at" timestamp with time zone,
	CONSTRAINT "users_username_unique" UNIQUE("username"),
	CONSTRAINT "users_role_check" CHECK ("role" IN ('viewer', 'operator', 'admin'))
);
--> statement-breakpoint
ALTER TABLE "agent_credentials" ADD CONSTRAINT "agent_credentials_host_id_hosts_id_fk" FOREIGN KEY ("host_id") REFERENCES "public"."hosts"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "devices" ADD CONSTRAINT "devices_host_id_hosts_id_fk" FOREIGN KEY ("host_id") REFERENCES "public"."hosts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "enrollment_tokens" ADD CONSTRAINT "enrollment_tokens_created_by_users_id_fk" FOREIGN KEY ("created_by") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "host_labels" ADD CONSTRAINT "host_labels_host_id_hosts_id_fk" FOREIGN KEY ("host_id") REFERENCES "public"."hosts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "iommu_groups" ADD CONSTRAINT "iommu_groups_host_id_hosts_id_fk" FOREIGN KEY ("host_id") REFERENCES "public"."hosts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_events" ADD CONSTRAINT "job_events_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_host_id_hosts_id_fk" FOREIGN KEY ("host_id") REFERENCES "public"."hosts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_created_by_users_id_fk" FOREIGN KEY ("created_by") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_canary_of_jobs_id_fk" FOREIGN KEY ("canary_of") REFERENCES "public"."jobs"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "sessions" ADD CONSTRAINT "sessions_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "agent_credentials_host_idx" ON "agent_credentials" USING btree ("host_id");--> statement-breakpoint
CREATE INDEX "audit_log_at_idx" ON "audit_log" USING btree ("at");--> statement-breakpoint
CREATE INDEX "audit_log_host_idx" ON "audit_log" USING btree ("host_id","at");--> statement-breakpoint
CREATE INDEX "devices_status_idx" ON "devices" USING btree ("status");--> statement-breakpoint
CREATE INDEX "devices_vendor_device_idx" ON "devices" USING btree ("vendor_id","device_id");--> statement-breakpoint
CREATE INDEX "devices_host_group_idx" ON "devices" USING btree ("host_id","iommu_group");--> statement-breakpoint
CREATE INDEX "devices_driver_idx" ON "devices" USING btree ("driver");--> statement-breakpoint
CREATE INDEX "host_labels_key_value_idx" ON "host_labels" USING btree ("key","value");--> statement-breakpoint
CREATE INDEX "hosts_state_idx" ON "hosts" USING btree ("state");--> statement-breakpoint
CREATE INDEX "hosts_hostname_idx" ON "hosts" USING btree ("hostname");--> statement-breakpoint
CREATE INDEX "job_events_job_idx" ON "job_events" USING btree ("job_id","id");--> statement-breakpoint
CREATE UNIQUE INDEX "jobs_one_active_per_group_idx" ON "jobs" USING btree ("host_id","iommu_group") WHERE "state" IN ('queued', 'dispatched', 'running');--> statement-breakpoint
CREATE INDEX "jobs_state_deadline_idx" ON "jobs" USING btree ("state","deadline");--> statement-breakpoint
CREATE INDEX "jobs_host_state_idx" ON "jobs" USING btree ("host_id","state");--> statement-breakpoint
CREATE INDEX "jobs_bulk_idx" ON "jobs" USING btree ("bulk_id");--> statement-breakpoint
CREATE INDEX "jobs_created_at_idx" ON "jobs" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "sessions_user_idx" ON "sessions" USING btree ("user_id");