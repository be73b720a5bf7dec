ALTER TABLE "hosts" ADD COLUMN "agent_version" text;--> statement-breakpoint
ALTER TABLE "hosts" ADD COLUMN "inventory_hash" text;