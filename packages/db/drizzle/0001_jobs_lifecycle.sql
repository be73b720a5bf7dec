ALTER TABLE "jobs" ADD COLUMN "accepted_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "cancel_requested_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "lease_owner" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "reason_code" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "reason_message" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "preview_hash" text;--> statement-breakpoint
CREATE INDEX "jobs_canary_of_idx" ON "jobs" USING btree ("canary_of");